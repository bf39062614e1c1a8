"""The repeated-list probe of benchmarks/base_copying.py tells a model that copies from one that cannot."""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import base_copying  # noqa: E402


class Copier(torch.nn.Module):
    """An ideal copier: find the earlier position whose preceding text matches the current one
    longest, and predict (with certainty) the token that followed it; with no earlier match, a
    uniform guess over the vocabulary."""

    def __init__(self, vocab_size: int, copies: bool):
        super().__init__()
        self.vocab_size, self.copies = vocab_size, copies
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the probe a device to read

    def forward(self, input_ids):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.vocab_size)
        for b in range(batch):
            row = input_ids[b].tolist()
            for i in range(length):
                best, best_len = None, 0
                for j in range(i):
                    n = 0
                    while n <= j and row[j - n] == row[i - n]:
                        n += 1
                    if n > best_len:
                        best, best_len = j, n
                if self.copies and best is not None:
                    logits[b, i, row[best + 1]] = 100.0
        return SimpleNamespace(logits=logits)


def test_repeated_list_separates_copying_from_guessing(small_tokenizer):
    vocab = len(small_tokenizer)
    uniform = math.log(vocab)

    first, second = base_copying.repeated_list_losses(Copier(vocab, copies=False), small_tokenizer,
                                                    n_lists=4)
    assert first == pytest.approx(uniform) and second == pytest.approx(uniform)

    first, second = base_copying.repeated_list_losses(Copier(vocab, copies=True), small_tokenizer,
                                                    n_lists=4)
    assert second < 0.01  # every token of the second copy is predicted from the first
    assert first > 0.5 * uniform  # the first copy cannot be copied from anywhere

