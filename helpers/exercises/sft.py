"""Exercises of notebook 02: the masked SFT loss."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from helpers.exercises.checking import Case, Close, Exercise, KnownBug, exact, register

from helpers.exercises.base_model import _token_losses


# --- Step 1: supervised fine-tuning (notebook 02) --------------------------------------------


def _sft_batch(rows: list[tuple[int, int]], seq: int, vocab: int, seed: int) -> Callable[[], dict]:
    """A left-padded chat batch: each row has `pad` padding tokens, a prompt, then an answer.

    rows: (prompt_length, answer_length) per row; the rest of `seq` is left padding.
    """

    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(len(rows), seq, vocab, generator=g).requires_grad_()
        input_ids = torch.randint(0, vocab - 1, (len(rows), seq), generator=g)
        attention_mask = torch.zeros(len(rows), seq, dtype=torch.long)
        assistant_mask = torch.zeros(len(rows), seq, dtype=torch.long)
        for r, (prompt, answer) in enumerate(rows):
            start = seq - prompt - answer
            attention_mask[r, start:] = 1
            assistant_mask[r, seq - answer:] = 1
        input_ids[attention_mask == 0] = vocab - 1
        return {"logits": logits, "input_ids": input_ids, "attention_mask": attention_mask,
                "assistant_mask": assistant_mask}

    return make


def _sft_all_tokens(logits, input_ids, attention_mask, assistant_mask):
    return _ntl_reference(logits, input_ids, attention_mask)


def _sft_no_shift(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask * attention_mask).float()
    return (_token_losses(logits, input_ids) * counted).sum() / counted.sum()


def _sft_padding_in_mean(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, 1:] * attention_mask[:, 1:]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / attention_mask[:, 1:].sum()


def _sft_prompt_in_mean(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, 1:] * attention_mask[:, 1:]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / counted.numel()


def _sft_mask_unshifted(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, :-1] * attention_mask[:, :-1]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / counted.sum()


def _ntl_reference(logits, input_ids, attention_mask):
    from helpers.pretrain import next_token_loss

    return next_token_loss(logits, input_ids, attention_mask)


register(Exercise(
    name="masked_sft_loss",
    reference="helpers.sft:masked_sft_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("one conversation, no padding", _sft_batch([(4, 3)], 7, 9, seed=21)),
        Case("three conversations, left padded", _sft_batch([(3, 2), (4, 4), (2, 1)], 9, 9, seed=22)),
        Case("a long prompt and a one-token answer", _sft_batch([(7, 1), (2, 5)], 8, 12, seed=23)),
        Case("four conversations, 40-token vocabulary", _sft_batch([(5, 4), (3, 6), (6, 2), (2, 2)], 10, 40, seed=24)),
    ],
    bugs=[
        KnownBug("prompt tokens are not masked: the loss must count only the assistant's tokens "
                 "(multiply by assistant_mask)", _sft_all_tokens),
        KnownBug("labels are not shifted: the logits at position t predict token t+1, so compare "
                 "logits[:, :-1] with input_ids[:, 1:] (and shift the masks the same way)", _sft_no_shift),
        KnownBug("padding is counted in the mean: divide by the number of assistant tokens, "
                 "not by every real token", _sft_padding_in_mean),
        KnownBug("you divide by every position of the batch (prompt and padding included): divide by "
                 "the number of counted assistant tokens", _sft_prompt_in_mean),
        KnownBug("the masks must line up with the targets: use assistant_mask[:, 1:] and "
                 "attention_mask[:, 1:], not [:, :-1]", _sft_mask_unshifted),
    ],
    hints=[
        "This is the next-token loss of notebook 01 with one more mask: only the assistant's tokens "
        "are targets.",
        "counted = assistant_mask[:, 1:] * attention_mask[:, 1:] marks the targets that count.",
        "Per-token cross-entropy of logits[:, :-1] against input_ids[:, 1:], times counted, summed, "
        "divided by counted.sum().",
    ],
))
