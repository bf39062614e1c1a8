"""Pretraining: next-token prediction on the Instruction World's "web" text.

The base model of the course (its "GPT-3") learns only to continue text. Nothing here knows about
instructions: that is the point the notebook 01 makes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.config import seed_everything
from helpers.progress import tqdm


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from positions <= t, over real tokens only.

    logits: (batch, seq, vocab); input_ids and attention_mask: (batch, seq).
    The logits at position t score the token at t+1, so both are shifted by one; a target that
    is padding (attention_mask 0) is left out of the mean.
    """
    shifted_logits = logits[:, :-1, :]
    targets = input_ids[:, 1:]
    target_is_real = attention_mask[:, 1:].to(shifted_logits.dtype)
    per_token = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)).float(),
        targets.reshape(-1),
        reduction="none",
    ).view_as(target_is_real)
    return (per_token * target_is_real).sum() / target_is_real.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# Pretraining a model from scratch
# --------------------------------------------------------------------------------------------


@dataclass
class PretrainConfig:
    """One pretraining run. The course's runs take their length and size from the profile
    (``helpers.profiles``); the defaults here are a short run of the tiny model."""

    steps: int = 800
    batch_size: int = 16  # blocks per step
    seq_len: int = 128  # tokens per block; world documents are 10-80 tokens long
    lr: float = 3e-3  # peak learning rate: small models tolerate (and need) a large one
    warmup: int = 40  # steps of linear warm-up from 0 to lr
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100  # steps between held-out evaluations
    heldout_share: float = 0.02  # share of the documents held out when no held-out text is given

    def validate(self) -> None:
        """Refuse a run that cannot train, naming the setting: 0 steps or blocks would divide by
        zero or feed the model an empty batch, an infinite learning rate gives a NaN model."""
        for name, least in (("steps", 1), ("batch_size", 1), ("seq_len", 2), ("eval_every", 1),
                            ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"pretraining setting {name}={value!r}: use a whole number of at "
                                 f"least {least} (the default is {getattr(PretrainConfig, name)})")
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio", "heldout_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"pretraining setting {name}={value!r}: use a finite number of at "
                                 f"least 0 (the default is {getattr(PretrainConfig, name)})")
        if self.lr == 0:
            raise ValueError(f"pretraining setting lr=0 trains nothing: use a positive learning rate "
                             f"(the default is {PretrainConfig.lr})")


def pack_corpus(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """All documents as one token stream, EOS between them, cut into (n_blocks, seq_len).

    Packing instead of padding: every position of every block is a real token that the loss
    uses, so no compute is spent on padding, and the model learns that EOS ends a document and
    that a new, unrelated one follows. The last incomplete block is dropped.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    # add_special_tokens=False: EOS is placed by hand, once between documents.
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise ValueError(f"The texts make {len(stream)} tokens, fewer than one block of {seq_len}.")
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def pretraining_batches(tokenizer, texts: Sequence[str], batch_size: int = 8, seq_len: int = 128,
                        seed: int = 0) -> Iterator[torch.Tensor]:
    """Endless (batch_size, seq_len) blocks of packed pretraining text, for PPO-ptx."""
    blocks = pack_corpus(tokenizer, list(texts), seq_len)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(blocks.size(0), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield blocks[order[start:start + batch_size]]


def cosine_with_warmup(step: int, cfg: PretrainConfig) -> float:
    """Learning-rate multiplier: linear warm-up, then a cosine down to ``min_lr_ratio``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (nanoGPT's choice): decaying biases and
    LayerNorm gains toward 0 only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def block_loss(model, blocks: torch.Tensor) -> torch.Tensor:
    """Next-token loss of a batch of packed blocks (every token real, so the mask is all ones)."""
    mask = torch.ones_like(blocks)
    logits = model(input_ids=blocks, attention_mask=mask).logits
    return next_token_loss(logits, blocks, mask)


@torch.no_grad()
def blocks_loss(model, blocks: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token loss over ``blocks`` in eval mode (restores the model's mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        batch = blocks[i:i + batch_size].to(device)
        total += float(block_loss(model, batch)) * len(batch)
        count += len(batch)
    model.train(was_training)
    return total / max(1, count)


def heldout_loss(model, tokenizer, texts: list[str], seq_len: int = 128, batch_size: int = 64) -> float:
    """Mean next-token loss (nats per token) on documents the model did not train on."""
    return blocks_loss(model, pack_corpus(tokenizer, texts, seq_len), batch_size)


def split_heldout(texts: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) documents, a shuffled ``share`` held out."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = max(1, int(len(texts) * share))
    held = set(order[:n_held])
    return ([t for i, t in enumerate(texts) if i not in held],
            [t for i, t in enumerate(texts) if i in held])


def pretrain(model, tokenizer, texts: list[str], cfg: PretrainConfig, progress: bool = True,
             callback=None, heldout_texts: list[str] | None = None) -> dict:
    """Train ``model`` in place to predict the next token of ``texts``; return its history.

    Each step draws ``batch_size`` packed blocks (every block once per pass over the corpus, in
    a seeded random order), so a run repeats exactly on the CPU for a given seed.
    ``callback(step, logs)`` is called after every step (e.g. a live plot); ``logs`` has
    ``train_loss`` and ``lr``, plus ``heldout_loss`` at evaluation steps.

    Returns a dict of lists ``step``, ``train_loss``, ``eval_step``, ``heldout_loss`` and the
    numbers ``tokens_per_second`` (training only), ``seconds`` (all), ``tokens_seen``.
    """


    cfg.validate()
    seed_everything(cfg.seed)
    if heldout_texts is None:
        texts, heldout_texts = split_heldout(list(texts), cfg.heldout_share, cfg.seed)
    train_blocks = pack_corpus(tokenizer, texts, cfg.seq_len)
    held_blocks = pack_corpus(tokenizer, heldout_texts, cfg.seq_len)
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, cfg))
    sampler = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train_blocks), generator=sampler)
    cursor = 0

    history = {"step": [], "train_loss": [], "eval_step": [], "heldout_loss": [],
               "tokens_per_second": 0.0, "seconds": 0.0, "tokens_seen": 0}
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretraining", disable=not progress)
    started, eval_seconds = time.perf_counter(), 0.0
    for step in bar:
        if cursor + cfg.batch_size > len(order):  # a new pass over the corpus, a new order
            order, cursor = torch.randperm(len(train_blocks), generator=sampler), 0
        batch = train_blocks[order[cursor:cursor + cfg.batch_size]].to(device)
        cursor += cfg.batch_size

        loss = block_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()

        logs = {"train_loss": loss.item(), "lr": schedule.get_last_lr()[0]}
        history["step"].append(step + 1)
        history["train_loss"].append(logs["train_loss"])
        history["tokens_seen"] += batch.numel()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            eval_started = time.perf_counter()
            logs["heldout_loss"] = blocks_loss(model, held_blocks)
            eval_seconds += time.perf_counter() - eval_started
            history["eval_step"].append(step + 1)
            history["heldout_loss"].append(logs["heldout_loss"])
            bar.set_postfix(loss=f"{logs['train_loss']:.3f}", heldout=f"{logs['heldout_loss']:.3f}")
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{logs['train_loss']:.3f}",
                            heldout=f"{history['heldout_loss'][-1]:.3f}" if history["heldout_loss"] else "-")
        if callback is not None:
            callback(step + 1, logs)
    history["seconds"] = time.perf_counter() - started
    # Training speed: evaluation time left out.
    history["tokens_per_second"] = history["tokens_seen"] / max(history["seconds"] - eval_seconds, 1e-9)
    model.eval()
    return history
