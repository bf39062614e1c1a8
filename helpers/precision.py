"""Number formats for training: float32 weights always, half-precision arithmetic where a GPU has it.

Why the weights stay float32. An Adam step changes a weight by about the learning rate. The gpu
profile fine-tunes with learning rates of 1e-6 to 5e-5, and bfloat16 has 8 bits of mantissa:
around a weight of 0.05 its neighbouring values are 2e-4 apart, so almost every update rounds
back to the weight it started from, and training runs for minutes and learns nothing. Hub
checkpoints such as SmolLM2's are stored in bfloat16, and ``from_pretrained`` keeps that dtype
unless told otherwise, so every model the course trains is loaded as float32
(``models.load_causal_lm``, ``models.load_reward_model``).

Why half precision anyway. On a GPU the matrix products run several times faster in 16 bits.
``autocast`` computes them in bfloat16 where the GPU supports it (A100, L4, ...), else in
float16 (a T4), while the weights, the optimizer's state and the updates stay float32 (mixed
precision). float16 has a narrow range, so small gradients underflow to 0: ``grad_scaler``
multiplies the loss before the backward pass and divides the gradients after, as mixed
precision requires. On a CPU nothing changes: float32 throughout (bfloat16 on a CPU is emulated,
slower, and loses the same updates).
"""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The 16-bit format to compute in on ``device``, or None for float32 (any CPU)."""
    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device | str):
    """A context in which matrix products run in 16 bits on a GPU; does nothing elsewhere."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler that is active only for float16 (where gradients would underflow);
    everywhere else its ``scale``, ``unscale_`` and ``step`` pass through unchanged."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)


def trainer_flags(device: torch.device | str) -> dict:
    """The ``bf16`` / ``fp16`` flags of a transformers or TRL trainer config for ``device``.
    TRL's configs default to ``bf16=True``, which on a CPU means slow emulated bfloat16."""
    dtype = autocast_dtype(device)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def non_float32(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters that are not float32 (should be none)."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
