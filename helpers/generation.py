"""Sampling from a causal language model: temperature, batched generation with left padding."""

from __future__ import annotations

import torch


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
