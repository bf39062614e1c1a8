"""Next-token loss by hand, packing, the schedule, and a short run that must learn."""

import math

import pytest
import torch

from helpers import world
from helpers.models import build_causal_lm
from helpers.pretrain import (PretrainConfig, cosine_with_warmup, heldout_loss, next_token_loss,
                              pack_corpus, pretrain)
from helpers.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_corpus(n_docs=600), vocab_size=512)


def test_next_token_loss_by_hand():
    # vocabulary of 2, sequence [0, 1, 1]: position 0 predicts 1, position 1 predicts 1.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]]])
    input_ids = torch.tensor([[0, 1, 1]])
    mask = torch.ones_like(input_ids)
    p1_at_0 = 0.5  # softmax([0, 0])[1]
    p1_at_1 = math.exp(0.0) / (math.exp(2.0) + math.exp(0.0))
    expected = -(math.log(p1_at_0) + math.log(p1_at_1)) / 2
    assert next_token_loss(logits, input_ids, mask).item() == pytest.approx(expected, abs=1e-6)
    # the last position's logits predict nothing
    logits2 = logits.clone()
    logits2[0, 2] = torch.tensor([-9.0, 9.0])
    assert next_token_loss(logits2, input_ids, mask).item() == pytest.approx(expected, abs=1e-6)


def test_next_token_loss_ignores_padding():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]]])
    input_ids = torch.tensor([[0, 1, 1]])
    base = next_token_loss(logits, input_ids, torch.ones_like(input_ids))
    # the same row with two pad targets (id 1, arbitrary logits) appended: same loss
    padded_logits = torch.cat([logits, torch.tensor([[[3.0, -1.0], [7.0, 2.0]]])], dim=1)
    padded_ids = torch.tensor([[0, 1, 1, 1, 1]])
    padded_mask = torch.tensor([[1, 1, 1, 0, 0]])
    torch.testing.assert_close(next_token_loss(padded_logits, padded_ids, padded_mask), base)


def test_pack_corpus_puts_eos_between_documents(tok):
    docs = ["Sara ate a pear.", "Omar went to the park.", "The dog ran to the lake."]
    blocks = pack_corpus(tok, docs * 4, seq_len=8)
    stream = []
    for d in docs * 4:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert blocks.shape == (len(stream) // 8, 8)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    assert tok.pad_token_id not in blocks.flatten().tolist()  # packing: no padding at all
    with pytest.raises(ValueError):
        pack_corpus(tok, ["hi"], seq_len=64)


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    assert cosine_with_warmup(0, cfg) == pytest.approx(0.1)
    assert cosine_with_warmup(9, cfg) == pytest.approx(1.0)
    assert cosine_with_warmup(10, cfg) == pytest.approx(1.0)
    assert cosine_with_warmup(55, cfg) == pytest.approx(0.55)
    assert cosine_with_warmup(100, cfg) == pytest.approx(0.1)
    values = [cosine_with_warmup(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def _short_run(tok, seed):
    texts = world.pretraining_corpus(n_docs=400)
    torch.manual_seed(seed)
    model = build_causal_lm(tok, "tiny")
    cfg = PretrainConfig(steps=30, batch_size=8, seq_len=64, warmup=3, eval_every=10, seed=seed)
    return model, pretrain(model, tok, texts, cfg, progress=False)


def test_short_pretraining_lowers_heldout_loss(tok):
    heldout = world.heldout_corpus(n_docs=60)
    torch.manual_seed(0)
    untrained = heldout_loss(build_causal_lm(tok, "tiny"), tok, heldout, seq_len=64)
    model, history = _short_run(tok, seed=0)
    trained = heldout_loss(model, tok, heldout, seq_len=64)
    assert untrained == pytest.approx(math.log(len(tok)), rel=0.1)  # a fresh model guesses uniformly
    assert trained < untrained - 1.0
    assert history["heldout_loss"][-1] < history["heldout_loss"][0]
    assert len(history["train_loss"]) == 30 and history["eval_step"] == [10, 20, 30]
    assert history["tokens_seen"] == 30 * 8 * 64 and history["tokens_per_second"] > 0
    assert not model.training


def test_pretraining_is_deterministic(tok):
    _, first = _short_run(tok, seed=3)
    _, again = _short_run(tok, seed=3)
    _, other = _short_run(tok, seed=4)
    assert first["train_loss"] == again["train_loss"]
    assert first["heldout_loss"] == again["heldout_loss"]
    assert first["train_loss"] != other["train_loss"]


def test_callback_sees_every_step(tok):
    seen = []
    model = build_causal_lm(tok, "tiny")
    cfg = PretrainConfig(steps=4, batch_size=2, seq_len=32, warmup=1, eval_every=2)
    pretrain(model, tok, world.pretraining_corpus(n_docs=100), cfg, progress=False,
             callback=lambda step, logs: seen.append((step, sorted(logs))))
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert seen[1][1] == ["heldout_loss", "lr", "train_loss"] and seen[0][1] == ["lr", "train_loss"]
