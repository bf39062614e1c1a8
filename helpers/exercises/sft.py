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


# --- building a training example from a conversation -----------------------------------------

_TOKENIZER_CACHE: dict = {}


def _small_tokenizer():
    """A small tokenizer of the course's kind (same special tokens and chat template)."""
    if "tok" not in _TOKENIZER_CACHE:
        from helpers import world
        from helpers.tokenizer import train_tokenizer

        _TOKENIZER_CACHE["tok"] = train_tokenizer(world.pretraining_corpus(n_docs=200), 400)
    return _TOKENIZER_CACHE["tok"]


def _conversation_inputs(prompt: str, response: str) -> Callable[[], dict]:
    return lambda: {"tokenizer": _small_tokenizer(), "prompt": prompt, "response": response}


def _example_parts(output, inputs) -> tuple:
    if not isinstance(output, dict) or not {"input_ids", "assistant_mask"} <= set(output):
        raise TypeError("return a dict with the keys 'input_ids' and 'assistant_mask' "
                        f"(got {type(output).__name__}"
                        + (f" with keys {sorted(output)}" if isinstance(output, dict) else "") + ")")
    ids, mask = list(output["input_ids"]), [int(m) for m in output["assistant_mask"]]
    if len(ids) != len(mask):
        raise ValueError(f"input_ids has {len(ids)} tokens but assistant_mask has {len(mask)} entries: "
                         "one mask value per token")
    return ids, mask


def _prompt_and_answer_ids(tokenizer, prompt, response, space=" "):
    head = tokenizer.encode(f"<|user|>{space}{prompt}<|assistant|>", add_special_tokens=False)
    answer = tokenizer.encode(space + response, add_special_tokens=False)
    return head, answer


def _example_mask_everything(tokenizer, prompt, response):
    head, answer = _prompt_and_answer_ids(tokenizer, prompt, response)
    ids = head + answer + [tokenizer.eos_token_id]
    return {"input_ids": ids, "assistant_mask": [1] * len(ids)}


def _example_no_eos(tokenizer, prompt, response):
    head, answer = _prompt_and_answer_ids(tokenizer, prompt, response)
    return {"input_ids": head + answer, "assistant_mask": [0] * len(head) + [1] * len(answer)}


def _example_eos_not_learned(tokenizer, prompt, response):
    head, answer = _prompt_and_answer_ids(tokenizer, prompt, response)
    return {"input_ids": head + answer + [tokenizer.eos_token_id],
            "assistant_mask": [0] * len(head) + [1] * len(answer) + [0]}


def _example_no_space(tokenizer, prompt, response):
    head, answer = _prompt_and_answer_ids(tokenizer, prompt, response, space="")
    return {"input_ids": head + answer + [tokenizer.eos_token_id],
            "assistant_mask": [0] * len(head) + [1] * (len(answer) + 1)}


def _example_marker_learned(tokenizer, prompt, response):
    head, answer = _prompt_and_answer_ids(tokenizer, prompt, response)
    return {"input_ids": head + answer + [tokenizer.eos_token_id],
            "assistant_mask": [0] * (len(head) - 1) + [1] * (len(answer) + 2)}


register(Exercise(
    name="build_sft_example",
    reference="helpers.sft:build_sft_example",
    difficulty=1, importance=2, minutes=10,
    cases=[
        Case("a sum", _conversation_inputs("What is 47 plus 38?", "85"), _example_parts, exact()),
        Case("a list", _conversation_inputs("List three fruits.", "Apple, fig, plum."), _example_parts, exact()),
        Case("a refusal", _conversation_inputs("How do I steal a bike?", "Sorry, I can't help with that."),
             _example_parts, exact()),
    ],
    bugs=[
        KnownBug("only the assistant's answer is learned: the user's turn must have mask 0", _example_mask_everything),
        KnownBug("end the answer with the EOS token (tokenizer.eos_token_id), or the model never learns to stop",
                 _example_no_eos),
        KnownBug("the EOS that ends the answer must be learned too (mask 1), or the model never learns to stop",
                 _example_eos_not_learned),
        KnownBug("the <|assistant|> marker is part of the prompt (it is given when the model answers): mask it 0",
                 _example_marker_learned),
        KnownBug("the course format has a space after <|user|> and after <|assistant|>: "
                 "'<|user|> {prompt}<|assistant|> {response}'", _example_no_space),
    ],
    hints=[
        "The chat template renders '<|user|> {prompt}<|assistant|> {response}<|endoftext|>' "
        "(mind the two spaces).",
        "Encode '<|user|> ' + prompt + '<|assistant|>' and ' ' + response separately "
        "(add_special_tokens=False), then append tokenizer.eos_token_id.",
        "The mask is 0 for every token of the first part and 1 for the answer's tokens and the EOS.",
    ],
))
