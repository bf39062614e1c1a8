"""Pretraining: next-token prediction on the Instruction World's "web" text.

The base model of the course (its "GPT-3") learns only to continue text. Nothing here knows about
instructions: that is the point the notebook 01 makes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
