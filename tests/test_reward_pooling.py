"""How the reward model turns its head's outputs into one score: last token or answer mean.

Both poolings must read exactly the answer's tokens, ignore padding, and give PPO the same score
as ``reward.score`` gives a notebook.
"""

import pytest
import torch

from helpers import logprobs, models, reward
from helpers.models import ModelSize, build_causal_lm
from helpers.tokenizer import ASSISTANT

SMALL = ModelSize(n_layer=2, n_head=2, n_embd=32, n_positions=128)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer):
    return small_tokenizer


def reward_model(tokenizer, pooling, seed=0):
    torch.manual_seed(seed)
    model = models.value_model_from_causal_lm(build_causal_lm(tokenizer, SMALL)).eval()
    with torch.no_grad():  # a random head: a zero head would score everything 0 and prove nothing
        model.score.weight.normal_(0.0, 1.0)
    reward.set_pooling(model, tokenizer, pooling)
    return model


def test_answer_mask_by_hand():
    start = 7
    input_ids = torch.tensor([[0, 0, 5, 6, start, 9, 10, 2],
                              [5, 6, 6, start, 9, 2, 0, 0]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1],
                              [1, 1, 1, 1, 1, 1, 0, 0]])
    mask = reward.answer_mask(input_ids, attention, start)
    assert mask.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1],
                             [0, 0, 0, 0, 1, 1, 0, 0]]


def test_last_pooling_is_the_sequence_classifier_output(tokenizer):
    model = reward_model(tokenizer, "last")
    batch = reward._encode_pairs(tokenizer, ["Name two fruits.", "Hi! My name is Finn."],
                                 ["Fig, plum.", "Hi Finn! I am your assistant."], 160)
    ours = reward.pooled_scores(model, batch["input_ids"], batch["attention_mask"])
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    library = model(**batch, position_ids=position_ids).logits.squeeze(-1)
    torch.testing.assert_close(ours, library, rtol=1e-5, atol=1e-5)


def test_mean_pooling_is_the_mean_of_the_answer_tokens(tokenizer):
    model = reward_model(tokenizer, "mean")
    batch = reward._encode_pairs(tokenizer, ["Name two fruits."], ["Fig, plum."], 160)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
    per_token = model.score(hidden).squeeze(-1)[0]
    start = (ids[0] == tokenizer.convert_tokens_to_ids(ASSISTANT)).nonzero()[0, 0].item()
    expected = per_token[start + 1:].mean()  # every token after the marker, EOS included
    assert reward.pooled_scores(model, ids, attention)[0].item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("pooling", reward.POOLINGS)
def test_padding_never_changes_a_score(tokenizer, pooling):
    model = reward_model(tokenizer, pooling)
    prompts = ["Name two fruits.", "Compute 12 plus 30. Answer with the number only, please."]
    answers = ["Fig, plum.", "42"]
    together = reward.score(model, tokenizer, prompts, answers)
    alone = torch.cat([reward.score(model, tokenizer, [p], [a]) for p, a in zip(prompts, answers)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pooling", reward.POOLINGS)
def test_ppo_scores_answers_as_the_notebooks_do(tokenizer, pooling):
    model = reward_model(tokenizer, pooling)
    model.config.reward_offset = 0.25
    prompts, answers = ["Name two fruits.", "Reverse: a b c"], ["Fig, plum.", "c b a"]
    batch = reward._encode_pairs(tokenizer, prompts, answers, 160)
    from_ppo = logprobs.sequence_scores(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(from_ppo, reward.score(model, tokenizer, prompts, answers), rtol=1e-5, atol=1e-5)


def test_the_two_poolings_differ_and_an_unknown_one_is_refused(tokenizer):
    last, mean = reward_model(tokenizer, "last"), reward_model(tokenizer, "mean")
    args = (tokenizer, ["Name two fruits."], ["Fig, plum, pear, lemon."])
    assert not torch.allclose(reward.score(last, *args), reward.score(mean, *args))
    with pytest.raises(ValueError, match="pooling"):
        reward.set_pooling(last, tokenizer, "max")


def test_a_model_without_the_setting_reads_the_last_token(tokenizer):
    model = models.value_model_from_causal_lm(build_causal_lm(tokenizer, SMALL))
    assert reward.pooling_of(model) == "last"  # e.g. a model trained by TRL's RewardTrainer
