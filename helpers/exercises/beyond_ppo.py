"""Exercises of notebook 08: DPO's loss from token log-probabilities, and GRPO's group-relative
advantage."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from helpers.exercises.checking import Case, Close, Exercise, KnownBug, register

# --- dpo_loss ----------------------------------------------------------------------------------
#
# The inputs are what a trainer has after one forward pass of each model over the two
# conversations of every pair: a log-probability per token (prompt, then answer, then padding,
# which holds 0) and a mask that is 1 on the answer's tokens. The prompt's tokens are the same in
# both conversations of a pair, and so are their log-probabilities (a causal model has not seen
# the answer yet): that is what makes "summing over the prompt too" leave the loss unchanged
# while it shifts every implicit reward.


def _dpo_inputs(prompt_lengths: list[int], chosen_lengths: list[int], rejected_lengths: list[int],
                beta: float, seed: int, same_models: bool = False) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        width = max(p + max(c, r) for p, c, r in zip(prompt_lengths, chosen_lengths, rejected_lengths)) + 1

        def logps() -> torch.Tensor:
            return -torch.rand(len(prompt_lengths), width, generator=g) * 3 - 0.05

        prompt_policy, prompt_ref = logps(), logps()
        tensors = {name: logps() for name in ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")}
        masks = {"chosen_mask": torch.zeros(len(prompt_lengths), width),
                 "rejected_mask": torch.zeros(len(prompt_lengths), width)}
        for i, p in enumerate(prompt_lengths):
            for side, lengths in (("chosen", chosen_lengths), ("rejected", rejected_lengths)):
                end = p + lengths[i]
                masks[f"{side}_mask"][i, p:end] = 1
                for model, prompt in (("policy", prompt_policy), ("ref", prompt_ref)):
                    row = tensors[f"{model}_{side}"][i]
                    row[:p] = prompt[i, :p]  # the same prompt, the same log-probs in both answers
                    row[end:] = 0.0  # padding
        if same_models:
            tensors["ref_chosen"], tensors["ref_rejected"] = tensors["policy_chosen"].clone(), tensors[
                "policy_rejected"].clone()
        return {**tensors, **masks, "beta": beta}

    return make


def _answer(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (logps * mask).sum(-1)


def _dpo_from(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float):
    """The reference's formula from the two log-ratios (for variants that get those wrong)."""
    chosen, rejected = beta * chosen_ratio, beta * rejected_ratio
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


def _dpo_no_reference(pc, pr, rc, rr, cm, rm, beta):
    return _dpo_from(_answer(pc, cm), _answer(pr, rm), beta)


def _dpo_beta_outside(pc, pr, rc, rr, cm, rm, beta):
    chosen, rejected = beta * (_answer(pc, cm) - _answer(rc, cm)), beta * (_answer(pr, rm) - _answer(rr, rm))
    return -(beta * F.logsigmoid((chosen - rejected) / beta)).mean(), chosen, rejected


def _dpo_beta_outside_unscaled(pc, pr, rc, rr, cm, rm, beta):
    chosen, rejected = _answer(pc, cm) - _answer(rc, cm), _answer(pr, rm) - _answer(rr, rm)
    return -(beta * F.logsigmoid(chosen - rejected)).mean(), chosen, rejected


def _dpo_divides_by_beta(pc, pr, rc, rr, cm, rm, beta):
    return _dpo_from(_answer(pc, cm) - _answer(rc, cm), _answer(pr, rm) - _answer(rr, rm), 1.0 / beta)


def _dpo_swapped_in_loss(pc, pr, rc, rr, cm, rm, beta):
    loss, chosen, rejected = _dpo_from(_answer(pc, cm) - _answer(rc, cm), _answer(pr, rm) - _answer(rr, rm), beta)
    return -F.logsigmoid(rejected - chosen).mean(), chosen, rejected


def _dpo_swapped_everywhere(pc, pr, rc, rr, cm, rm, beta):
    return _dpo_from(_answer(pr, rm) - _answer(rr, rm), _answer(pc, cm) - _answer(rc, cm), beta)


def _dpo_prompt_summed(pc, pr, rc, rr, cm, rm, beta):
    # every position: the prompt's tokens count too (padding holds 0, so it adds nothing)
    return _dpo_from(pc.sum(-1) - rc.sum(-1), pr.sum(-1) - rr.sum(-1), beta)


def _dpo_token_mean(pc, pr, rc, rr, cm, rm, beta):
    def mean(x, m):
        return _answer(x, m) / m.sum(-1)

    return _dpo_from(mean(pc, cm) - mean(rc, cm), mean(pr, rm) - mean(rr, rm), beta)


def _dpo_sum_over_pairs(pc, pr, rc, rr, cm, rm, beta):
    loss, chosen, rejected = _dpo_from(_answer(pc, cm) - _answer(rc, cm), _answer(pr, rm) - _answer(rr, rm), beta)
    return loss * len(chosen), chosen, rejected


def _dpo_plus_logsigmoid(pc, pr, rc, rr, cm, rm, beta):
    loss, chosen, rejected = _dpo_from(_answer(pc, cm) - _answer(rc, cm), _answer(pr, rm) - _answer(rr, rm), beta)
    return -loss, chosen, rejected


_SWAP_HINT = ("chosen and rejected are swapped: the loss is -log sigmoid(chosen_reward - rejected_reward), which "
              "pushes the PREFERRED answer up")

register(Exercise(
    name="dpo_loss",
    reference="helpers.dpo:dpo_loss_from_token_logprobs",
    difficulty=2, importance=3, minutes=15,
    cases=[
        Case("2 pairs, beta = 0.1, answers of different lengths after a 3-token prompt",
             _dpo_inputs([3, 3], [2, 4], [3, 1], beta=0.1, seed=0)),
        Case("3 pairs of different prompt lengths, beta = 0.5",
             _dpo_inputs([2, 4, 3], [3, 1, 2], [2, 3, 4], beta=0.5, seed=1)),
        Case("4 pairs, beta = 0.2", _dpo_inputs([3, 1, 2, 4], [1, 3, 2, 2], [2, 2, 3, 1], beta=0.2, seed=2)),
        Case("the policy is still the reference (before training): loss log 2, rewards 0",
             _dpo_inputs([2, 3], [2, 2], [3, 1], beta=0.1, seed=3, same_models=True)),
    ],
    bugs=[
        KnownBug("DPO's implicit reward is beta * log(pi / pi_ref): subtract the REFERENCE model's answer log-prob "
                 "from the policy's (without the reference nothing anchors the policy to the SFT model)",
                 _dpo_no_reference),
        KnownBug("beta multiplies the log-ratios INSIDE the sigmoid: -log sigmoid(beta * (chosen log-ratio - "
                 "rejected log-ratio)), not beta * (-log sigmoid(...)) outside it", _dpo_beta_outside),
        KnownBug("beta multiplies the log-ratios INSIDE the sigmoid: -log sigmoid(beta * (chosen log-ratio - "
                 "rejected log-ratio)), not beta * (-log sigmoid(...)) outside it", _dpo_beta_outside_unscaled),
        KnownBug("multiply the log-ratios by beta, don't divide: reward = beta * (log pi - log pi_ref)",
                 _dpo_divides_by_beta),
        KnownBug(_SWAP_HINT, _dpo_swapped_in_loss),
        KnownBug(_SWAP_HINT, _dpo_swapped_everywhere),
        KnownBug("sum the log-probs over the ANSWER's tokens only (where the mask is 1): the prompt is given, not "
                 "generated. Your loss happens to be right (the prompt's log-ratio is the same for both answers of a "
                 "pair and cancels), but every implicit reward is off by it", _dpo_prompt_summed),
        KnownBug("log pi(answer | prompt) is the SUM of the answer's token log-probs, not their mean",
                 _dpo_token_mean),
        KnownBug("the loss is the MEAN over pairs, not the sum", _dpo_sum_over_pairs),
        KnownBug("the loss is MINUS log sigmoid(...): minimizing it raises the preferred answer's reward",
                 _dpo_plus_logsigmoid),
    ],
    hints=[
        "First each answer's log-probability: (token_logprobs * mask).sum(-1), for each of the four tensors "
        "(chosen with chosen_mask, rejected with rejected_mask).",
        "chosen_rewards = beta * (policy answer log-prob - reference answer log-prob) of the chosen answers; the same "
        "for the rejected ones.",
        "loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean(); return loss, chosen_rewards.detach(), "
        "rejected_rewards.detach().",
    ],
))


# --- group_advantages ---------------------------------------------------------------------------


def _group_inputs(rewards: list[float], group_size: int) -> Callable[[], dict]:
    def make() -> dict:
        return {"rewards": torch.tensor(rewards), "group_size": group_size}
    return make


def _adv_batch_baseline(rewards, group_size):
    r = rewards.float()
    return (r - r.mean()) / (r.std() + 1e-4)


def _adv_no_scaling(rewards, group_size):
    g = rewards.float().view(-1, group_size)
    return (g - g.mean(1, keepdim=True)).view(-1)


def _adv_no_eps(rewards, group_size):
    g = rewards.float().view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / g.std(1, keepdim=True)).view(-1)


def _adv_population_std(rewards, group_size):
    g = rewards.float().view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True, unbiased=False) + 1e-4)).view(-1)


def _adv_interleaved(rewards, group_size):
    g = rewards.float().view(group_size, -1)  # column i: every n-th answer
    return ((g - g.mean(0, keepdim=True)) / (g.std(0, keepdim=True) + 1e-4)).reshape(-1)


def _adv_reversed(rewards, group_size):
    g = rewards.float().view(-1, group_size)
    return ((g.mean(1, keepdim=True) - g) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def _adv_leave_one_out(rewards, group_size):
    g = rewards.float().view(-1, group_size)
    others = (g.sum(1, keepdim=True) - g) / (group_size - 1)
    return (g - others).view(-1)


register(Exercise(
    name="group_advantages",
    reference="helpers.grpo:group_advantages",
    difficulty=1, importance=3, minutes=8,
    cases=[
        Case("2 prompts, G = 3: rewards 1, 2, 4 and 0, 3, 6", _group_inputs([1.0, 2.0, 4.0, 0.0, 3.0, 6.0], 3),
             compare=Close(rtol=1e-3, atol=1e-3)),
        Case("3 prompts, G = 4, rewards on the reward model's scale",
             _group_inputs([0.3, -1.2, 0.8, 0.1, 2.0, 1.0, -0.5, 0.4, -2.0, -1.0, 0.5, 1.5], 4),
             compare=Close(rtol=1e-3, atol=1e-3)),
        Case("2 prompts, G = 4; every answer to the first got the same reward",
             _group_inputs([0.7, 0.7, 0.7, 0.7, 1.0, 0.0, 0.0, 1.0], 4), compare=Close(rtol=1e-3, atol=1e-3)),
        Case("1 prompt, G = 2", _group_inputs([3.0, 1.0], 2), compare=Close(rtol=1e-3, atol=1e-3)),
    ],
    bugs=[
        KnownBug("compare each answer with the other answers TO THE SAME PROMPT: the mean and std of its group of "
                 "group_size, not of the whole batch", _adv_batch_baseline),
        KnownBug("GRPO also divides by the group's standard deviation: (r - mean) / (std + eps)", _adv_no_scaling),
        KnownBug("a group whose answers all got the same reward has std 0, and 0 / 0 is NaN: add a small eps (1e-4) "
                 "to the std before dividing, so that such a group gets advantage 0", _adv_no_eps),
        KnownBug("use the sample standard deviation (divided by G - 1: torch.std's default), as GRPO's "
                 "implementations do", _adv_population_std),
        KnownBug("the answers to one prompt are NEXT TO EACH OTHER (answer j of prompt i at i * G + j): group with "
                 "rewards.view(-1, group_size), one row per prompt", _adv_interleaved),
        KnownBug("the advantage is r - mean, not mean - r: an answer better than its siblings gets a positive one",
                 _adv_reversed),
        KnownBug("that is RLOO's leave-one-out baseline; GRPO subtracts the mean of the WHOLE group (the answer "
                 "included) and divides by its std", _adv_leave_one_out),
    ],
    hints=[
        "groups = rewards.view(-1, group_size): one row per prompt.",
        "Within each row: mean = groups.mean(dim=1, keepdim=True), std = groups.std(dim=1, keepdim=True).",
        "advantages = (groups - mean) / (std + 1e-4), flattened back with .view(-1).",
    ],
))
