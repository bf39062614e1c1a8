"""Sampling from a causal language model: temperature, batched generation with left padding."""

from __future__ import annotations

import warnings

import torch

from helpers.progress import tqdm
from helpers.tokenizer import render_chat


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature).

    logits: (batch, vocab) -> (batch,) token ids. temperature 0 means greedy (argmax): dividing
    by zero is not defined, and the limit of the softmax as T -> 0 puts all mass on the argmax.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Batched generation
# --------------------------------------------------------------------------------------------


def _encode_prompts(tokenizer, texts: list[str], max_prompt_tokens: int):
    """Left-padded prompt ids and mask; a prompt longer than ``max_prompt_tokens`` keeps its end."""
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if any(len(r) > max_prompt_tokens for r in rows):
        warnings.warn(f"A prompt is longer than {max_prompt_tokens} tokens; only its last "
                      f"{max_prompt_tokens} tokens are used.", stacklevel=3)
        rows = [r[-max_prompt_tokens:] for r in rows]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    # Left padding: every prompt ends in the last column, so the first new token of every row
    # is predicted at the same position and each step appends one column to the whole batch.
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return input_ids, attention_mask


@torch.no_grad()
def _generate_batch(model, tokenizer, texts: list[str], max_new_tokens: int, temperature: float,
                    generator: torch.Generator | None) -> dict:
    """Sample replies to one batch of already rendered prompts. Returns tensors on the CPU."""
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 10**9)
    prompt_ids, prompt_mask = _encode_prompts(tokenizer, texts, max(1, n_positions - max_new_tokens))
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    batch = prompt_ids.size(0)

    # Positions count real tokens only: a left-padded prompt starts at position 0 like an
    # unpadded one (pads get 0 too; they are masked out of attention anyway).
    position_ids = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    next_position = position_ids[:, -1] + 1
    attention_mask = prompt_mask

    new_tokens, alive_flags = [], []
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        token = sample_next_token(logits, temperature, generator)
        token = torch.where(finished, torch.full_like(token, pad), token)  # done rows only pad
        new_tokens.append(token)
        alive_flags.append(~finished)  # this token belongs to the reply (EOS included)
        finished = finished | (token == eos)
        if bool(finished.all()):
            break
        # Feed only the new token; the cache holds keys and values of everything before it.
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        out = model(input_ids=token[:, None], attention_mask=attention_mask,
                    position_ids=next_position[:, None], past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_position = next_position + 1

    response_ids = torch.stack(new_tokens, dim=1)
    response_mask = torch.stack(alive_flags, dim=1).long()
    return {"prompt_ids": prompt_ids.cpu(), "prompt_mask": prompt_mask.cpu(),
            "response_ids": response_ids.cpu(), "response_mask": response_mask.cpu(),
            "ended_with_eos": finished.cpu() if len(new_tokens) else torch.zeros(batch, dtype=torch.bool)}


def _reply_text(tokenizer, ids: torch.Tensor, mask: torch.Tensor, chat: bool = True) -> str:
    """The reply's text: its tokens before the first EOS (EOS and padding excluded). In a chat,
    without the space the chat format puts after "<|assistant|>" (``helpers.tokenizer.CHAT_TEMPLATE``)."""
    tokens = ids[mask.bool()].tolist()
    if tokens and tokens[-1] == tokenizer.eos_token_id:
        tokens = tokens[:-1]
    # Special tokens other than EOS are kept: a model that writes "<|user|>" should be seen doing it.
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    return text[1:] if chat and text.startswith(" ") else text


def _pad_to(tensor: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    extra = width - tensor.size(1)
    if extra == 0:
        return tensor
    filler = torch.full((tensor.size(0), extra), value, dtype=tensor.dtype)
    return torch.cat([filler, tensor] if left else [tensor, filler], dim=1)


def _merge_batches(parts: list[dict], pad: int) -> dict:
    """One set of tensors for all batches: prompts left-padded, replies right-padded to a width."""
    prompt_width = max(p["prompt_ids"].size(1) for p in parts)
    response_width = max(p["response_ids"].size(1) for p in parts)
    prompt_ids = torch.cat([_pad_to(p["prompt_ids"], prompt_width, pad, left=True) for p in parts])
    prompt_mask = torch.cat([_pad_to(p["prompt_mask"], prompt_width, 0, left=True) for p in parts])
    response_ids = torch.cat([_pad_to(p["response_ids"], response_width, pad, left=False) for p in parts])
    response_mask = torch.cat([_pad_to(p["response_mask"], response_width, 0, left=False) for p in parts])
    return {
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
        "prompt_length": prompt_width,  # columns; the reply starts at this column
        "response_ids": response_ids,
        "response_mask": response_mask,
        "ended_with_eos": torch.cat([p["ended_with_eos"] for p in parts]),
    }


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 48, temperature: float = 1.0,
             chat: bool = True, seed: int | None = None, batch_size: int = 64, progress: bool = False,
             return_details: bool = False):
    """Sample one reply per prompt, in batches; return the replies' text.

    chat=True renders each prompt with the chat template's generation prompt
    ("<|user|> {prompt}<|assistant|>"), for SFT and RLHF models; chat=False feeds the raw text,
    for the base model, which only continues text. temperature 0 is greedy decoding. A reply
    stops at its first EOS; its text excludes the EOS. ``seed`` makes sampling repeatable.

    With ``return_details=True`` returns ``(texts, details)``, where details holds (on the CPU):
    ``input_ids`` and ``attention_mask`` of prompt + reply (prompt left-padded, reply
    right-padded), ``prompt_length`` (the column where replies start), ``response_ids`` and
    ``response_mask`` (1 on reply tokens, the EOS included; 0 on padding after it) and
    ``ended_with_eos`` (False for a reply cut off at ``max_new_tokens``). PPO scores and trains on
    exactly these tokens.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("generate needs a pad token distinct from EOS (see helpers.tokenizer).")
    texts = [render_chat(p, tokenizer=tokenizer) for p in prompts] if chat else list(prompts)
    if not texts:
        return ([], {}) if return_details else []
    device = next(model.parameters()).device
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()  # dropout off: sampling and the log-probs computed later must agree
    parts = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="generating", disable=not progress):
            parts.append(_generate_batch(model, tokenizer, texts[start:start + batch_size],
                                         max_new_tokens, temperature, generator))
    finally:
        model.train(was_training)

    replies = [_reply_text(tokenizer, ids, mask, chat)
               for part in parts for ids, mask in zip(part["response_ids"], part["response_mask"])]
    if not return_details:
        return replies
    return replies, _merge_batches(parts, tokenizer.pad_token_id)
