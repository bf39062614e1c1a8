"""Model sizes, special-token ids in the config, and the reward head read at the last real token."""

import pytest
import torch

from helpers import world
from helpers.models import (MODEL_SIZES, ModelSize, build_causal_lm, count_parameters, load_causal_lm,
                            load_reward_model, position_ids_from_mask)
from helpers.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_corpus(n_docs=600), vocab_size=512)


@pytest.fixture(scope="module")
def saved_lm(tok, tmp_path_factory):
    torch.manual_seed(0)
    model = build_causal_lm(tok, "tiny")
    path = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_sizes():
    # count with the course's 2,048-token vocabulary
    class FakeTok:
        bos_token_id, eos_token_id, pad_token_id = 0, 0, 1

        def __len__(self):
            return 2048

    tiny = count_parameters(build_causal_lm(FakeTok(), "tiny"))
    big = count_parameters(build_causal_lm(FakeTok(), "big"))
    assert 0.8e6 <= tiny <= 2e6
    assert 4 <= big / tiny <= 8
    assert MODEL_SIZES["tiny"].n_positions == MODEL_SIZES["big"].n_positions


def test_config_matches_tokenizer(tok):
    model = build_causal_lm(tok, "tiny")
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id != model.config.eos_token_id == tok.eos_token_id
    assert model.config.model_type == MODEL_SIZES["tiny"].architecture == "llama"
    assert model.config.attention_dropout == MODEL_SIZES["tiny"].dropout
    # tied input/output embeddings count once
    n_tied = count_parameters(model)
    assert n_tied == sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_gpt2_still_builds_for_comparison(tok):
    shape = ModelSize(n_layer=2, n_head=2, n_embd=32, architecture="gpt2")
    model = build_causal_lm(tok, shape)
    assert model.config.model_type == "gpt2" and model.config.n_layer == 2
    ids = torch.tensor([tok("Sara ate a pear.")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.size(1), len(tok))
    with pytest.raises(ValueError, match="architecture"):
        build_causal_lm(tok, ModelSize(n_layer=2, n_head=2, n_embd=32, architecture="mamba"))


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_causal_lm_round_trip(saved_lm, tok):
    model = load_causal_lm(saved_lm)
    ids = torch.tensor([tok("Sara ate a pear.")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.size(1), len(tok))


def test_reward_model_scores_at_last_real_token_with_left_padding(saved_lm, tok):
    rm = load_reward_model(saved_lm).eval()
    assert rm.config.pad_token_id == tok.pad_token_id
    texts = ["<|user|> Hi!<|assistant|> Hello<|endoftext|>",
             "<|user|> What is 12 plus 30?<|assistant|> It is 42.<|endoftext|>"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # the short row is left-padded
    with torch.no_grad():
        padded = rm(**batch, position_ids=position_ids_from_mask(batch["attention_mask"])).logits
        alone = torch.cat([rm(**tok([t], return_tensors="pt")).logits for t in texts])
    assert padded.shape == (2, 1)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    # the score depends on the text: the head is read at a real token, not at padding
    assert not torch.allclose(padded[0], padded[1])


def test_reward_model_keeps_the_transformer(saved_lm):
    lm = load_causal_lm(saved_lm)
    rm = load_reward_model(saved_lm)
    rm_weights, lm_weights = rm.base_model.state_dict(), lm.base_model.state_dict()
    assert rm_weights.keys() == lm_weights.keys()
    for name, weight in lm_weights.items():
        torch.testing.assert_close(rm_weights[name], weight)
