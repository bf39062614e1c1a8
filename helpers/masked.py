"""Statistics over the real tokens of a padded batch: padding must never count.

A batch of responses of different lengths is padded to one width, and the padding positions
hold numbers too (the models compute them). Every mean, variance or whitening over such a batch
takes a mask, 1 on real tokens and 0 on padding, and ignores the rest.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (over all of them, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (with Bessel's n - 1 by default, as torch.var)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    squares = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        squares = squares * n / (n - 1).clamp(min=1.0)
    return squares


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` shifted and scaled to mean 0 and variance 1 over the real positions of the whole batch.

    Padding takes no part in the mean or the variance (it would drag both toward its own
    values) and is set to 0 in the result. Whitening advantages makes the size of a policy step
    independent of the reward's scale, and centres them: about half of the tokens are pushed
    up, half down.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.to(x.dtype)
