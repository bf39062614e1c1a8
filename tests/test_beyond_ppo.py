"""Notebook 08's measuring tools and stages: the KL from SFT measured alike for every policy
(exactly 0 for SFT itself, the analytic KL on average), paired win rates and best-of-n picks by
hand, counted and measured memory, the exercises' reference against the trainer's log-probs, and
the stages' settings and prerequisites."""

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import dpo, footprint, frontier, generation, profiles
from helpers import exercises as ex
from helpers.models import build_causal_lm

# --------------------------------------------------------------------------------------------
# KL from SFT, measured on samples
# --------------------------------------------------------------------------------------------


class ContextFreeLM(torch.nn.Module):
    """A 'language model' whose next-token distribution is the same at every position: softmax of
    ``logits`` (one row over the vocabulary). Enough for ``generation.generate`` and the KL."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.row = torch.nn.Parameter(logits.clone(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=512)

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **kwargs):
        length = input_ids.size(1) if not logits_to_keep else min(logits_to_keep, input_ids.size(1))
        logits = self.row.expand(input_ids.size(0), length, -1)
        return SimpleNamespace(logits=logits, past_key_values=None)


def _two_models(tokenizer):
    """Two context-free models that never end an answer (EOS and pad impossible): each answer is
    exactly max_new_tokens tokens, and its KL is that many times the per-token KL."""
    vocab = len(tokenizer)
    g = torch.Generator().manual_seed(0)
    policy_logits, reference_logits = torch.zeros(vocab), torch.zeros(vocab)
    policy_logits[:8] = torch.randn(8, generator=g) * 2 + 4  # most mass on 8 tokens
    reference_logits[:8] = 4.0
    for logits in (policy_logits, reference_logits):
        logits[[tokenizer.eos_token_id, tokenizer.pad_token_id]] = -math.inf
    return ContextFreeLM(policy_logits), ContextFreeLM(reference_logits)


def test_answer_kl_of_a_model_against_itself_is_exactly_zero(small_tokenizer):
    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, "tiny").eval()
    _, details = generation.generate(model, small_tokenizer, ["What is 2 plus 3?", "Name a fruit."] * 3,
                                     max_new_tokens=12, temperature=1.0, seed=0, return_details=True)
    kl = frontier.answer_kl(model, model, details)
    assert kl.shape == (6,) and kl.abs().max().item() == 0.0


def test_answer_kl_averages_to_the_analytic_kl(small_tokenizer):
    policy, reference = _two_models(small_tokenizer)
    tokens = 5
    _, details = generation.generate(policy, small_tokenizer, ["hi"] * 1500, max_new_tokens=tokens,
                                     temperature=1.0, seed=0, return_details=True, batch_size=500)
    assert details["response_mask"].sum(1).eq(tokens).all()  # no answer ended early
    kl = frontier.answer_kl(policy, reference, details, batch_size=500)
    p, q = torch.log_softmax(policy.row, -1), torch.log_softmax(reference.row, -1)
    finite = p.isfinite()
    per_token = (p[finite].exp() * (p[finite] - q[finite])).sum().item()
    assert per_token > 0.3  # two clearly different distributions
    # the mean of 1,500 one-sample estimates, within 4 standard errors of tokens * KL per token
    assert abs(kl.mean().item() - tokens * per_token) < 4 * kl.std().item() / math.sqrt(len(kl))
    assert (kl < 0).any()  # single estimates can be negative; their mean is not


# --------------------------------------------------------------------------------------------
# Win rates and best-of-n, by hand
# --------------------------------------------------------------------------------------------


def test_paired_judgments_by_hand():
    gold = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.9]])
    base = np.array([[0.0, 0.0], [0.5, 1.0], [0.3, 0.1]])
    # prompt 1: win, tie -> 0.75; prompt 2: tie, loss -> 0.25; prompt 3: loss, win -> 0.5
    assert frontier.paired_judgments(gold, base) == pytest.approx([0.75, 0.25, 0.5])
    # a policy against itself wins half the time, with a zero-width interval
    assert frontier.win_rate_over(gold, gold) == pytest.approx((0.5, 0.5, 0.5))
    # more rounds than the baseline: the first ones are paired
    assert frontier.paired_judgments(np.array([[1.0, 0.0, 0.0]]), np.array([[0.5]])) == [1.0]
    with pytest.raises(ValueError):
        frontier.paired_judgments(gold, base[:2])


def test_best_of_n_picks_by_hand():
    proxy = np.array([[0.1, 0.9, 0.3, 1.5], [2.0, -1.0, 0.5, 0.0]])
    gold = np.array([[0.8, 0.2, 0.6, 0.0], [0.1, 0.9, 0.5, 0.3]])
    assert frontier.best_of_n_picks(proxy, gold, 1)[:, 0].tolist() == [0.8, 0.1]
    assert frontier.best_of_n_picks(proxy, gold, 2)[:, 0].tolist() == [0.2, 0.1]
    assert frontier.best_of_n_picks(proxy, gold, 4)[:, 0].tolist() == [0.0, 0.1]
    assert frontier.best_of_n_picks(proxy, gold, 2).shape == (2, 1)  # pairs with any baseline's rounds


# --------------------------------------------------------------------------------------------
# Memory: counted and measured
# --------------------------------------------------------------------------------------------


def test_weights_and_optimizer_memory_by_hand():
    one_mb_model = 2 ** 20 // 4  # float32 parameters
    # DPO: policy and reference kept, the policy with gradients and Adam's two moments
    assert footprint.weights_and_optimizer_mb(one_mb_model, kept=2, trained=1) == pytest.approx(2 + 3)
    # PPO: four models, two of them trained
    assert footprint.weights_and_optimizer_mb(one_mb_model, kept=4, trained=2) == pytest.approx(4 + 6)
    assert frontier.MODELS_IN_MEMORY["PPO"][0] > frontier.MODELS_IN_MEMORY["GRPO"][0] > frontier.MODELS_IN_MEMORY["DPO"][0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures a CPU process's resident memory")
def test_footprint_sees_a_large_allocation():
    with footprint.Footprint() as run:
        block = torch.ones(64 * 2 ** 20 // 4)  # 64 MB, every page written
        time.sleep(0.15)  # several readings while it is held
        del block
    assert run.peak_mb is not None and run.peak_mb > 40
    assert run.seconds >= 0.15
    assert run.as_metrics()["memory_measured"] == "RSS added"


# --------------------------------------------------------------------------------------------
# The DPO exercise's reference is the trainer's loss
# --------------------------------------------------------------------------------------------


def test_dpo_loss_from_token_logprobs_equals_dpo_loss_on_sequence_logprobs(small_tokenizer):
    tok = small_tokenizer
    torch.manual_seed(0)
    policy = build_causal_lm(tok, "tiny").eval()
    torch.manual_seed(1)
    reference = build_causal_lm(tok, "tiny").eval()
    prompts = ["What is 2 plus 3?", "Reverse the words: red green blue"]
    chosen, rejected = ["5", "blue green red"], ["It is 6, I think, or maybe 7.", "red"]
    with torch.no_grad():
        logps = {name: model_logps for name, model_logps in
                 (("policy", dpo.conversation_logprobs(policy, tok, prompts + prompts, chosen + rejected)),
                  ("reference", dpo.conversation_logprobs(reference, tok, prompts + prompts, chosen + rejected)))}
        (pol, mask), (ref, _) = logps["policy"], logps["reference"]
        ours = dpo.dpo_loss_from_token_logprobs(pol[:2], pol[2:], ref[:2], ref[2:], mask[:2], mask[2:], 0.3)
        seq = {name: dpo.sequence_logprobs(model, tok, prompts + prompts, chosen + rejected)
               for name, model in (("policy", policy), ("reference", reference))}
        expected = dpo.dpo_loss(seq["policy"][:2], seq["policy"][2:], seq["reference"][:2], seq["reference"][2:], 0.3)
    for got, want in zip(ours, expected):
        assert torch.allclose(got, want, atol=1e-5)
    # summing over the whole conversation (prompt too) keeps the loss but moves the rewards
    whole = torch.ones_like(mask)
    prompt_too = dpo.dpo_loss_from_token_logprobs(pol[:2], pol[2:], ref[:2], ref[2:], whole[:2], whole[2:], 0.3)
    assert prompt_too[0].item() == pytest.approx(ours[0].item(), abs=1e-4)
    assert not torch.allclose(prompt_too[1], ours[1], atol=1e-3)


def test_a_students_own_dpo_loss_passes_and_a_prompt_sum_is_named():
    import torch.nn.functional as F

    def mine(pc, pr, rc, rr, cm, rm, beta):
        logratio_c = (pc * cm).sum(1) - (rc * cm).sum(1)
        logratio_r = (pr * rm).sum(1) - (rr * rm).sum(1)
        margin = beta * (logratio_c - logratio_r)
        return F.softplus(-margin).mean(), (beta * logratio_c).detach(), (beta * logratio_r).detach()

    def whole_conversation(pc, pr, rc, rr, cm, rm, beta):
        return mine(pc, pr, rc, rr, torch.ones_like(cm), torch.ones_like(rm), beta)

    assert ex.run_checks("dpo_loss", mine).ok
    result = ex.run_checks("dpo_loss", whole_conversation)
    assert not result.ok and "ANSWER's tokens only" in result.hint


def test_a_students_own_group_advantages_pass():
    def mine(rewards, group_size):
        out = []
        for group in rewards.split(group_size):
            out.append((group - group.mean()) / (group.std() + 1e-6))
        return torch.cat(out)

    assert ex.run_checks("group_advantages", mine).ok


# --------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------


def test_the_stages_of_notebook_08_and_what_they_need():
    from helpers import pipeline

    names = list(pipeline.STAGES)
    ours = ["dpo", "dpo_beta_low", "dpo_beta_high", "grpo", "grpo_gold"]
    start = names.index("dpo")
    assert names[start:start + len(ours)] == ours and names[start - 1] == "rm_scaled"
    for stage in ("dpo", "dpo_beta_low", "dpo_beta_high"):
        assert pipeline.get_stage(stage).requires == ("sft", "comparisons")  # the RM's own rankings
    assert pipeline.get_stage("grpo").requires == ("sft", "rm")
    assert pipeline.get_stage("grpo_gold").requires == ("sft",)  # no reward model


@pytest.mark.parametrize("profile", ["tiny", "gpu"])
@pytest.mark.parametrize("fast", [False, True])
def test_the_variants_change_only_what_they_say(profile, fast):
    dpo_settings = profiles.stage_settings(profile, fast, "dpo")
    for variant, beta in (("dpo_beta_low", profiles.DPO_BETA_LOW), ("dpo_beta_high", profiles.DPO_BETA_HIGH)):
        assert profiles.stage_settings(profile, fast, variant) == {**dpo_settings, "beta": beta}
    assert profiles.DPO_BETA_LOW < dpo_settings["beta"] < profiles.DPO_BETA_HIGH
    grpo_settings = profiles.stage_settings(profile, fast, "grpo")
    assert grpo_settings["reward"] == "rm"
    assert profiles.stage_settings(profile, fast, "grpo_gold") == {**grpo_settings, "reward": "gold"}
    # whole groups per step, at least two answers to compare in each
    assert grpo_settings["group_size"] >= 2 and grpo_settings["total_prompts"] % grpo_settings["prompts_per_step"] == 0
    if fast:
        assert dpo_settings["n_rankings"] and grpo_settings["total_prompts"] <= 16


def test_the_gpu_profile_steps_smaller_than_the_tiny_one():
    for stage in ("dpo", "grpo"):
        assert (profiles.stage_settings("gpu", False, stage)["learning_rate"]
                < profiles.stage_settings("tiny", False, stage)["learning_rate"] / 10)
