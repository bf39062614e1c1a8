"""Exercises of notebook 01: the next-token loss and sampling with temperature."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from helpers.exercises.checking import Case, Close, Exercise, KnownBug, exact, register


# --- Stage 1: pretraining (notebook 01) ------------------------------------------------------


def _lm_batch(lengths: list[int], seq: int, vocab: int, left_pad: bool, seed: int) -> Callable[[], dict]:
    """Inputs for a next-token loss: random logits, token ids, and padding on one side."""

    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(len(lengths), seq, vocab, generator=g).requires_grad_()
        input_ids = torch.randint(0, vocab - 1, (len(lengths), seq), generator=g)
        attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
        for row, n in enumerate(lengths):
            real = slice(seq - n, seq) if left_pad else slice(0, n)
            attention_mask[row, real] = 1
        input_ids[attention_mask == 0] = vocab - 1  # the pad id: a real token id that must not count
        return {"logits": logits, "input_ids": input_ids, "attention_mask": attention_mask}

    return make


def _token_losses(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view_as(targets)


def _ntl_no_shift(logits, input_ids, attention_mask):
    per_token = _token_losses(logits, input_ids)
    return (per_token * attention_mask).sum() / attention_mask.sum()


def _ntl_shift_backwards(logits, input_ids, attention_mask):
    per_token = _token_losses(logits[:, 1:], input_ids[:, :-1])
    mask = attention_mask[:, :-1]
    return (per_token * mask).sum() / mask.sum()


def _ntl_padding_in_mean(logits, input_ids, attention_mask):
    return _token_losses(logits[:, :-1], input_ids[:, 1:]).mean()


def _ntl_mask_wrong_side(logits, input_ids, attention_mask):
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    mask = attention_mask[:, :-1]
    return (per_token * mask).sum() / mask.sum()


def _ntl_sum(logits, input_ids, attention_mask):
    return (_token_losses(logits[:, :-1], input_ids[:, 1:]) * attention_mask[:, 1:]).sum()


def _ntl_mean_of_sequence_means(logits, input_ids, attention_mask):
    mask = attention_mask[:, 1:]
    per_sequence = (_token_losses(logits[:, :-1], input_ids[:, 1:]) * mask).sum(1) / mask.sum(1)
    return per_sequence.mean()


register(Exercise(
    name="next_token_loss",
    reference="helpers.pretrain:next_token_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("one sequence without padding", _lm_batch([6], 6, 7, left_pad=False, seed=1)),
        Case("a batch of 3 with right padding", _lm_batch([6, 4, 2], 6, 7, left_pad=False, seed=2)),
        Case("a batch of 3 with left padding", _lm_batch([5, 6, 3], 6, 7, left_pad=True, seed=3)),
        Case("a batch whose second row has one real token (nothing to predict)",
             _lm_batch([5, 1], 5, 4, left_pad=False, seed=4)),
        Case("a batch of 4 with a 50-token vocabulary", _lm_batch([12, 9, 11, 3], 12, 50, left_pad=False, seed=5)),
    ],
    bugs=[
        KnownBug("the logits at position t predict token t+1: compare logits[:, :-1] with input_ids[:, 1:]",
                 _ntl_no_shift),
        KnownBug("you shifted the wrong way: the logits at position t predict token t+1, so drop the LAST "
                 "logit (logits[:, :-1]) and the FIRST token (input_ids[:, 1:])", _ntl_shift_backwards),
        KnownBug("padding positions change your loss: apply the mask", _ntl_padding_in_mean),
        KnownBug("the mask must line up with the targets: use attention_mask[:, 1:], not attention_mask[:, :-1]",
                 _ntl_mask_wrong_side),
        KnownBug("you return the sum: divide by the number of real target tokens to get the mean",
                 _ntl_sum),
        KnownBug("you average each sequence first, so a short sequence's tokens weigh more: sum the masked "
                 "losses over the whole batch and divide by the total number of real target tokens",
                 _ntl_mean_of_sequence_means),
    ],
    hints=[
        "The logits at position t are the model's guess for token t+1: the last position has nothing "
        "to predict and the first token is never predicted.",
        "Shift: logits[:, :-1] against targets input_ids[:, 1:]; F.cross_entropy(..., reduction='none') "
        "wants (N, vocab) logits and (N,) targets, so flatten with .reshape.",
        "A target counts only where attention_mask[:, 1:] is 1: multiply the per-token losses by that "
        "mask, sum, and divide by the mask's sum.",
    ],
))


# --- Stage 1: generation (notebook 01) -------------------------------------------------------

_SAMPLING_LOGITS = torch.tensor([
    [2.0, 1.0, 0.0, -1.0, 0.5, -2.0],
    [0.0, 0.3, -0.4, 1.2, 0.1, 0.8],
    [-1.0, 1.5, 1.0, -0.5, 0.0, 2.5],
])
_DRAWS = 4000  # frequencies are then within about 0.008 (one sd) of the true probabilities


def _sampling_inputs(temperature: float, seed: int) -> Callable[[], dict]:
    """The rows of _SAMPLING_LOGITS repeated _DRAWS times: one call gives _DRAWS samples per row."""
    def make() -> dict:
        return {"logits": _SAMPLING_LOGITS.repeat(_DRAWS, 1), "temperature": temperature,
                "generator": torch.Generator().manual_seed(seed)}
    return make


def _greedy_inputs() -> dict:
    g = torch.Generator().manual_seed(7)
    return {"logits": torch.randn(4, 10, generator=g) * 3, "temperature": 0.0,
            "generator": torch.Generator().manual_seed(7)}


def _frequencies(samples: torch.Tensor, inputs: dict) -> torch.Tensor:
    """How often each token was drawn for each distinct row of logits."""
    vocab, rows = inputs["logits"].size(-1), _SAMPLING_LOGITS.size(0)
    if samples.min() < 0 or samples.max() >= vocab:
        raise ValueError(f"token ids must be between 0 and {vocab - 1}, got {samples.min()}..{samples.max()}")
    return F.one_hot(samples.long().view(-1, rows), vocab).float().mean(0)


def _sample_times_t(logits, temperature, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits * temperature, -1), 1, generator=generator).squeeze(-1)


def _sample_without_softmax(logits, temperature, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(logits / temperature, 1, generator=generator).squeeze(-1)


def _sample_argmax(logits, temperature, generator=None):
    return logits.argmax(-1)


def _sample_ignoring_t(logits, temperature, generator=None):
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)


def _sample_dividing_by_zero(logits, temperature, generator=None):
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(-1)


_sampled = Close(rtol=0.0, atol=0.04)  # about 5 sd of a frequency estimated from _DRAWS draws

register(Exercise(
    name="sample_with_temperature",
    reference="helpers.generation:sample_next_token",
    difficulty=1, importance=2, minutes=10,
    cases=[
        Case("temperature 0 (greedy) on 4 rows of logits", _greedy_inputs, compare=exact()),
        Case(f"temperature 1 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(1.0, 11),
             _frequencies, _sampled),
        Case(f"temperature 0.5 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(0.5, 12),
             _frequencies, _sampled),
        Case(f"temperature 2 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(2.0, 13),
             _frequencies, _sampled),
        Case("temperature 0 on the same rows, repeated", _sampling_inputs(0.0, 14), _frequencies, exact()),
    ],
    bugs=[
        KnownBug("divide the logits by the temperature, don't multiply: a small T must sharpen the "
                 "distribution (softmax(logits / T))", _sample_times_t),
        KnownBug("torch.multinomial wants probabilities: apply torch.softmax(logits / T, dim=-1) first",
                 _sample_without_softmax),
        KnownBug("you always return the most likely token: that is only right at T = 0; otherwise draw "
                 "with torch.multinomial from softmax(logits / T)", _sample_argmax),
        KnownBug("your samples don't depend on the temperature: divide the logits by T before the softmax",
                 _sample_ignoring_t),
        KnownBug("temperature 0 means greedy decoding: return logits.argmax(-1) instead of dividing by zero",
                 _sample_dividing_by_zero),
    ],
    hints=[
        "Temperature rescales the logits before the softmax: p = softmax(logits / T). T < 1 sharpens, "
        "T > 1 flattens, and T = 0 is the limit where all the mass is on the argmax.",
        "torch.multinomial(probs, num_samples=1, generator=generator) draws one id per row with shape "
        "(batch, 1); .squeeze(-1) makes it (batch,).",
        "Handle temperature == 0 first with logits.argmax(dim=-1), before any division.",
    ],
))
