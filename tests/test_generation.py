"""Batched sampling: left padding changes nothing, replies stop at their first EOS."""

from types import SimpleNamespace

import pytest
import torch

from helpers import world
from helpers.generation import generate
from helpers.models import build_causal_lm
from helpers.pretrain import PretrainConfig, pretrain
from helpers.tokenizer import render_chat, train_tokenizer

PROMPTS = ["What is 3 plus 4?", "Hi!", "Sort these words: pear, apple, fig, banana, cherry and plum.",
           "The dog", "Sara lived in Kelvania. One day Sara went to the"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_corpus(n_docs=600), vocab_size=512)


@pytest.fixture(scope="module")
def model(tok):
    """A model with a few steps of pretraining: varied, text-like replies that sometimes end."""
    torch.manual_seed(0)
    lm = build_causal_lm(tok, "tiny")
    cfg = PretrainConfig(steps=25, batch_size=8, seq_len=64, warmup=3, eval_every=25)
    pretrain(lm, tok, world.pretraining_corpus(n_docs=300), cfg, progress=False)
    return lm


@pytest.mark.parametrize("chat", [True, False])
def test_batched_greedy_equals_one_at_a_time(model, tok, chat):
    batched = generate(model, tok, PROMPTS, max_new_tokens=20, temperature=0.0, chat=chat)
    alone = [generate(model, tok, [p], max_new_tokens=20, temperature=0.0, chat=chat)[0] for p in PROMPTS]
    assert batched == alone
    # and splitting into small batches changes nothing either
    assert generate(model, tok, PROMPTS, max_new_tokens=20, temperature=0.0, chat=chat, batch_size=2) == batched


def test_sampling_repeats_with_a_seed(model, tok):
    a = generate(model, tok, PROMPTS, max_new_tokens=12, temperature=1.0, seed=7)
    b = generate(model, tok, PROMPTS, max_new_tokens=12, temperature=1.0, seed=7)
    c = generate(model, tok, PROMPTS, max_new_tokens=12, temperature=1.0, seed=8)
    assert a == b and a != c


def test_details_line_up_with_texts(model, tok):
    texts, d = generate(model, tok, PROMPTS, max_new_tokens=16, temperature=1.0, seed=0,
                        batch_size=2, return_details=True)
    n, p = len(PROMPTS), d["prompt_length"]
    assert d["input_ids"].shape == d["attention_mask"].shape == (n, p + d["response_ids"].size(1))
    assert torch.equal(d["input_ids"][:, p:], d["response_ids"])
    assert torch.equal(d["attention_mask"][:, p:], d["response_mask"])
    for i, prompt in enumerate(PROMPTS):
        prompt_ids = d["input_ids"][i, :p][d["attention_mask"][i, :p].bool()].tolist()
        assert prompt_ids == tok(render_chat(prompt), add_special_tokens=False)["input_ids"]
        reply = d["response_ids"][i][d["response_mask"][i].bool()].tolist()
        if d["ended_with_eos"][i]:
            assert reply[-1] == tok.eos_token_id and tok.eos_token_id not in reply[:-1]
            reply = reply[:-1]
        written = tok.decode(reply)  # the chat's reply text leaves out the space after the marker
        assert texts[i] == (written[1:] if written.startswith(" ") else written)


class ScriptedLM(torch.nn.Module):
    """Writes fixed tokens per row, whatever it reads: row r's t-th new token is script[r][t]."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(n_positions=256)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None, use_cache=True):
        step = 0 if past_key_values is None else past_key_values + 1
        logits = torch.zeros(input_ids.size(0), input_ids.size(1), self.vocab)
        for row, tokens in enumerate(self.script):
            logits[row, -1, tokens[min(step, len(tokens) - 1)]] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=step)


def test_rows_stop_at_their_first_eos(tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    a, b, c = tok("Sara ate", add_special_tokens=False)["input_ids"][:1] * 3
    script = [[a, b, eos, c, eos],  # stops after 3 tokens; what follows is never shown
              [a, a, a, a, a],  # never stops
              [eos, a, a, a, a]]  # empty reply
    lm = ScriptedLM(script, len(tok))
    texts, d = generate(lm, tok, ["x", "y", "z"], max_new_tokens=5, temperature=0.0, return_details=True)
    assert texts == [tok.decode([a, b]), tok.decode([a] * 5), ""]
    assert d["ended_with_eos"].tolist() == [True, False, True]
    assert d["response_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert d["response_ids"][0].tolist() == [a, b, eos, pad, pad]
    assert d["response_ids"][2].tolist() == [eos, pad, pad, pad, pad]


def test_a_chat_reply_is_the_text_after_the_space_that_follows_the_marker(tok):
    eos = tok.eos_token_id
    written = tok(" Positive.", add_special_tokens=False)["input_ids"]
    lm = ScriptedLM([written + [eos]], len(tok))
    assert generate(lm, tok, ["Is it good?"], max_new_tokens=6, temperature=0.0) == ["Positive."]
    # a base model continues raw text: nothing is taken away
    assert generate(lm, tok, ["Is it good?"], max_new_tokens=6, temperature=0.0, chat=False) == [" Positive."]
    # rendering the reply again gives back exactly the tokens the model wrote
    rendered = tok(render_chat("Is it good?", "Positive."), add_special_tokens=False)["input_ids"]
    assert rendered[-len(written) - 1:] == written + [eos]


def test_stops_early_when_every_row_ended(tok):
    eos = tok.eos_token_id
    lm = ScriptedLM([[eos], [5, eos]], len(tok))
    texts, d = generate(lm, tok, ["x", "y"], max_new_tokens=40, temperature=0.0, return_details=True)
    assert d["response_ids"].size(1) == 2  # no 40 steps of padding


def test_model_mode_is_restored(model, tok):
    model.train()
    generate(model, tok, ["Hi"], max_new_tokens=3)
    assert model.training
    model.eval()
    generate(model, tok, ["Hi"], max_new_tokens=3)
    assert not model.training


def test_pad_equal_to_eos_is_refused(model, tok):
    broken = SimpleNamespace(pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    with pytest.raises(ValueError, match="pad token distinct from EOS"):
        generate(model, broken, ["Hi"])
