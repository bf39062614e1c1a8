"""Step 2 of InstructGPT: a reward model (RM) learned from rankings.

The RM is the SFT model with its language-model head replaced by a scalar head: it reads a
prompt and a response and returns one number, r(x, y). It is trained so that, for every pair a
labeler ordered, the preferred response scores higher:

    loss = -1 / C(K, 2) * sum over pairs (w, l) of log sigmoid(r(x, y_w) - r(x, y_l))

InstructGPT put all C(K, 2) pairs of one prompt's ranking into one batch element: every response
is read once per epoch, and the pairs of one prompt are never split across batches (training on
shuffled pairs as if independent overfit within one epoch in the paper). ``train_reward_model``
does this; ``train_reward_model(grouped=False)`` is the shuffled-pairs comparison.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from helpers.labelers import Ranking, preference_pairs

# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def ranking_loss(rewards: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Loss of one prompt's ranking: the mean of -log sigmoid(r_w - r_l) over its pairs.

    rewards: (K,) the RM's scores of the K responses; pairs: (winner, loser) indices, e.g. from
    ``labelers.preference_pairs``. Dividing by the number of pairs (C(K, 2) without ties) keeps a
    prompt with many responses from outweighing the others.
    """
    if not pairs:
        return rewards.sum() * 0.0  # nothing preferred: no signal, but keep the graph
    winners = torch.tensor([w for w, _ in pairs], device=rewards.device)
    losers = torch.tensor([l for _, l in pairs], device=rewards.device)
    return -F.logsigmoid(rewards[winners] - rewards[losers]).mean()


def pairwise_accuracy(rewards: torch.Tensor, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """(correct, total): pairs where the RM scores the preferred response strictly higher."""
    correct = sum(int(rewards[w] > rewards[l]) for w, l in pairs)
    return correct, len(pairs)


# --------------------------------------------------------------------------------------------
# Scoring text
# --------------------------------------------------------------------------------------------


def _encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    from helpers.sft import conversation

    texts = [tokenizer.apply_chat_template(conversation(p, r), tokenize=False)
             for p, r in zip(prompts, responses)]
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                     max_length=max_length, add_special_tokens=False)


def raw_scores(model, tokenizer, prompts: list[str], responses: list[str],
               max_length: int = 160) -> torch.Tensor:
    """The scalar head's output for each (prompt, response), read at the last real token."""
    device = next(model.parameters()).device
    batch = _encode_pairs(tokenizer, prompts, responses, max_length)
    attention_mask = batch["attention_mask"].to(device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=attention_mask,
                position_ids=position_ids)
    return out.logits.squeeze(-1)


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 64,
          max_length: int = 160) -> torch.Tensor:
    """Rewards of (prompt, response) pairs, shifted so demonstrations score 0 on average."""
    model.eval()
    offset = float(getattr(model.config, "reward_offset", 0.0) or 0.0)
    out = [raw_scores(model, tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size],
                      max_length)
           for i in range(0, len(prompts), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0)).float().cpu() - offset


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class RMSettings:
    epochs: int = 1  # the paper: one epoch (more overfits)
    learning_rate: float = 3e-4
    prompts_per_batch: int = 8  # each prompt brings its K responses and C(K, 2) pairs
    pairs_per_batch: int = 48  # for the shuffled-pairs comparison
    weight_decay: float = 0.0
    max_length: int = 160
    grouped: bool = True
    seed: int = 0

    @classmethod
    def fast(cls) -> "RMSettings":
        return cls(prompts_per_batch=4, pairs_per_batch=24)


@dataclass
class RMHistory:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # training pairs, running
    seconds: float = 0.0
    responses_read: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _grouped_batches(rankings: list[Ranking], settings: RMSettings, rng: random.Random):
    order = list(range(len(rankings)))
    rng.shuffle(order)
    for i in range(0, len(order), settings.prompts_per_batch):
        group = [rankings[j] for j in order[i:i + settings.prompts_per_batch]]
        yield [(r.prompt, r.responses, r.pairs()) for r in group]


def _shuffled_pair_batches(rankings: list[Ranking], settings: RMSettings, rng: random.Random):
    pairs = [(r.prompt, r.responses[w], r.responses[l]) for r in rankings for w, l in r.pairs()]
    rng.shuffle(pairs)
    for i in range(0, len(pairs), settings.pairs_per_batch):
        # each pair is its own little "ranking" of two responses with one preference
        yield [(p, [w, l], [(0, 1)]) for p, w, l in pairs[i:i + settings.pairs_per_batch]]


def train_reward_model(model, tokenizer, rankings: list[Ranking], settings: RMSettings,
                       progress: bool = True) -> RMHistory:
    """Train ``model`` (a sequence classifier with one label) on rankings, in place."""
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    batches_of = _grouped_batches if settings.grouped else _shuffled_pair_batches
    n_batches = sum(1 for _ in batches_of(rankings, settings, random.Random(0))) * settings.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, n_batches // 20)) *
        0.5 * (1 + math.cos(math.pi * min(s, n_batches) / max(1, n_batches))))
    history = RMHistory()
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=n_batches, desc="reward model" + ("" if settings.grouped else " (shuffled pairs)"),
               disable=not progress)
    step = correct = total = 0
    for _ in range(settings.epochs):
        for batch in batches_of(rankings, settings, rng):
            prompts = [p for p, responses, _ in batch for _ in responses]
            responses = [r for _, rs, _ in batch for r in rs]
            rewards = raw_scores(model, tokenizer, prompts, responses, settings.max_length)
            losses, start = [], 0
            for _, rs, pairs in batch:
                mine = rewards[start:start + len(rs)]
                losses.append(ranking_loss(mine, pairs))
                c, t = pairwise_accuracy(mine.detach(), pairs)
                correct, total = correct + c, total + t
                start += len(rs)
            loss = torch.stack(losses).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            history.responses_read += len(responses)
            history.step.append(step)
            history.loss.append(loss.item())
            history.accuracy.append(correct / max(1, total))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / max(1, total):.2f}")
    bar.close()
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


def set_demonstration_offset(model, tokenizer, prompts: list[str], responses: list[str]) -> float:
    """Shift rewards so that the labelers' demonstrations score 0 on average (the paper's bias)."""
    model.config.reward_offset = 0.0
    mean = float(score(model, tokenizer, prompts, responses).mean())
    model.config.reward_offset = mean
    return mean


def heldout_accuracy(model, tokenizer, rankings: list[Ranking]) -> float:
    """Share of held-out preference pairs the RM orders like the labeler did."""
    correct = total = 0
    prompts = [r.prompt for r in rankings for _ in r.responses]
    responses = [x for r in rankings for x in r.responses]
    rewards = score(model, tokenizer, prompts, responses)
    start = 0
    for r in rankings:
        c, t = pairwise_accuracy(rewards[start:start + len(r.responses)], r.pairs())
        correct, total = correct + c, total + t
        start += len(r.responses)
    return correct / max(1, total)


__all__ = ["ranking_loss", "pairwise_accuracy", "score", "raw_scores", "RMSettings",
           "train_reward_model", "set_demonstration_offset", "heldout_accuracy", "preference_pairs"]
