"""Exercises of notebook 05: the pieces of PPO for language models.

Every input is laid out as in a rollout: one row per response, one column per response token,
right-padded after the response's last real token (``mask`` is 1 on real tokens, 0 on padding).
Padding positions hold deliberately large numbers, as a model's outputs do there, so a function
that forgets the mask gives a visibly different answer.
"""

from __future__ import annotations

from typing import Callable

import torch

from helpers.exercises.checking import Case, Exercise, KnownBug, register


def _right_mask(lengths: list[int], width: int) -> torch.Tensor:
    """(len(lengths), width) float mask: row i has lengths[i] ones, then zeros."""
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()


def _with_garbage(x: torch.Tensor, mask: torch.Tensor, g: torch.Generator, scale: float = 5.0) -> torch.Tensor:
    """x on real positions, large random numbers on padding (what a model outputs there)."""
    return torch.where(mask.bool(), x, scale * (torch.rand(x.shape, generator=g) + 1.0))


def _masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


# --- per_token_kl -----------------------------------------------------------------------------


def _kl_inputs(lengths: list[int], width: int, estimator: str, seed: int, same: bool = False) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        logprobs = -3 * torch.rand(len(lengths), width, generator=g)
        ref_logprobs = logprobs.clone() if same else logprobs + torch.randn(len(lengths), width, generator=g)
        return {"logprobs": _with_garbage(logprobs, mask, g, -4.0),
                "ref_logprobs": _with_garbage(ref_logprobs, mask, g, -2.0),
                "mask": mask, "estimator": estimator}
    return make


def _k3(log_ratio):
    return torch.exp(-log_ratio) - 1 + log_ratio


def _kl_reversed(logprobs, ref_logprobs, mask, estimator="k1"):
    log_ratio = ref_logprobs - logprobs
    return (log_ratio if estimator == "k1" else _k3(log_ratio)) * mask


def _kl_no_mask(logprobs, ref_logprobs, mask, estimator="k1"):
    log_ratio = logprobs - ref_logprobs
    return log_ratio if estimator == "k1" else _k3(log_ratio)


def _kl_abs(logprobs, ref_logprobs, mask, estimator="k1"):
    log_ratio = logprobs - ref_logprobs
    return (log_ratio.abs() if estimator == "k1" else _k3(log_ratio)) * mask


def _kl_ratio_not_log(logprobs, ref_logprobs, mask, estimator="k1"):
    log_ratio = logprobs - ref_logprobs
    return (log_ratio.exp() if estimator == "k1" else _k3(log_ratio)) * mask


def _kl_k3_ratio_upside_down(logprobs, ref_logprobs, mask, estimator="k1"):
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio * mask
    r = torch.exp(log_ratio)  # p / p_ref: upside down
    return ((r - 1) - torch.log(r)) * mask


def _kl_always_k1(logprobs, ref_logprobs, mask, estimator="k1"):
    return (logprobs - ref_logprobs) * mask


register(Exercise(
    name="per_token_kl",
    reference="helpers.ppo:per_token_kl",
    difficulty=1, importance=3, minutes=10,
    cases=[
        Case("k1 on 2 responses without padding", _kl_inputs([5, 5], 5, "k1", seed=1)),
        Case("k1 on 3 responses of lengths 4, 2, 3 (right padding)", _kl_inputs([4, 2, 3], 4, "k1", seed=2)),
        Case("k1 when the policy equals the reference (the KL must be 0)",
             _kl_inputs([3, 1, 2], 3, "k1", seed=3, same=True)),
        Case("k3 on 3 responses of lengths 4, 1, 3", _kl_inputs([4, 1, 3], 4, "k3", seed=4)),
        Case("k3 on 2 responses of lengths 6, 6", _kl_inputs([6, 6], 6, "k3", seed=5)),
    ],
    bugs=[
        KnownBug("k1 is logp - logp_ref, not the other way round: the penalty is the log of how much MORE "
                 "likely the policy makes its own sample than the reference does", _kl_reversed),
        KnownBug("padding positions change your KL: multiply by the mask so padding is 0", _kl_no_mask),
        KnownBug("don't take the absolute value: a one-token k1 estimate may be negative, and only the "
                 "signed estimate averages to the true KL", _kl_abs),
        KnownBug("the inputs are already log-probabilities: k1 is their difference logp - logp_ref, "
                 "not exp of it", _kl_ratio_not_log),
        KnownBug("k3 uses r = p_ref / p = exp(logp_ref - logp), then (r - 1) - log r", _kl_k3_ratio_upside_down),
        KnownBug("estimator='k3' asks for a different estimate: (r - 1) - log r with r = exp(logp_ref - logp)",
                 _kl_always_k1),
    ],
    hints=[
        "All inputs are log-probabilities of the sampled tokens, so log(p / p_ref) = logprobs - ref_logprobs.",
        "k1 = logprobs - ref_logprobs. k3 = (r - 1) - log(r) with r = exp(ref_logprobs - logprobs).",
        "Multiply the result by the mask: padding must contribute 0.",
    ],
))


# --- token_rewards ----------------------------------------------------------------------------


def _reward_inputs(lengths: list[int], width: int, beta: float, seed: int) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        kl = _with_garbage(0.5 * torch.randn(len(lengths), width, generator=g), mask, g)
        score = 2 * torch.randn(len(lengths), generator=g) + 1.0
        return {"score": score, "kl": kl, "mask": mask, "beta": beta}
    return make


def _rewards_last_column(score, kl, mask, beta):
    rewards = -beta * kl * mask
    rewards[:, -1] += score
    return rewards


def _rewards_first_token(score, kl, mask, beta):
    rewards = -beta * kl * mask
    rewards[:, 0] += score
    return rewards


def _rewards_score_everywhere(score, kl, mask, beta):
    return (-beta * kl + score[:, None]) * mask


def _rewards_kl_bonus(score, kl, mask, beta):
    rewards = beta * kl * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(score)), last] += score
    return rewards


def _rewards_no_mask(score, kl, mask, beta):
    rewards = -beta * kl
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(score)), last] += score
    return rewards


def _rewards_overwrite(score, kl, mask, beta):
    rewards = -beta * kl * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(score)), last] = score
    return rewards


def _rewards_off_by_one(score, kl, mask, beta):
    rewards = -beta * kl * mask
    last = mask.sum(1).long()  # the first padding position, or past the end
    rewards[torch.arange(len(score)), last] += score
    return rewards


register(Exercise(
    name="token_rewards",
    reference="helpers.ppo:token_rewards",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("3 responses of lengths 5, 2, 4 (right padding), beta = 0.05", _reward_inputs([5, 2, 4], 5, 0.05, 1)),
        Case("2 responses that both fill every column, beta = 0.1", _reward_inputs([4, 4], 4, 0.1, 2)),
        Case("a response of a single token among longer ones", _reward_inputs([1, 3, 6], 6, 0.02, 3)),
        Case("beta = 0 (only the score is left)", _reward_inputs([3, 5], 6, 0.0, 4)),
    ],
    bugs=[
        KnownBug("the score goes on the last REAL token, not the last position: for a short response "
                 "the last column is padding", _rewards_last_column),
        KnownBug("the reward model judges the finished response: its score arrives on the LAST real "
                 "token, not the first", _rewards_first_token),
        KnownBug("add the score once per response (on its last real token), not to every token",
                 _rewards_score_everywhere),
        KnownBug("the KL is a penalty: reward_t = -beta * kl_t, with a minus sign", _rewards_kl_bonus),
        KnownBug("padding positions must get reward 0: multiply the KL penalty by the mask", _rewards_no_mask),
        KnownBug("add the score to the last token's KL penalty (+=); don't overwrite the penalty",
                 _rewards_overwrite),
        KnownBug("off by one: a response of n real tokens ends at index n - 1", _rewards_off_by_one),
    ],
    hints=[
        "Start from rewards = -beta * kl * mask: every real token pays its KL penalty, padding gets 0.",
        "The last real token of row i is at index mask[i].sum() - 1 (responses are right-padded).",
        "rewards[torch.arange(batch), last] += score adds each row's score at its own last index "
        "(work on a new tensor, not on kl).",
    ],
))


# --- gae --------------------------------------------------------------------------------------


def _gae_inputs(lengths: list[int], width: int, gamma: float, lam: float, seed: int) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        rewards = 0.1 * torch.randn(len(lengths), width, generator=g) * mask
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(lengths)), last] += torch.randn(len(lengths), generator=g)
        values = _with_garbage(torch.randn(len(lengths), width, generator=g), mask, g)
        return {"rewards": rewards, "values": values, "mask": mask, "gamma": gamma, "lam": lam}
    return make


def _gae_loop(rewards, values, mask, gamma, lam, backwards=True, mask_values=True, lam_in_recursion=True,
              add_values=True):
    if mask_values:
        values = values * mask
    advantages = torch.zeros_like(values)
    width = values.size(1)
    steps = reversed(range(width)) if backwards else range(width)
    carried = torch.zeros_like(values[:, 0])
    for t in steps:
        neighbour = t + 1 if backwards else t - 1
        inside = 0 <= neighbour < width
        next_value = values[:, neighbour] if inside else torch.zeros_like(carried)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        carried = delta + gamma * (lam if lam_in_recursion else 1.0) * carried
        advantages[:, t] = carried
    advantages = advantages * mask
    returns = (advantages + values if add_values else advantages) * mask
    return advantages, returns


def _gae_forwards(rewards, values, mask, gamma, lam):
    return _gae_loop(rewards, values, mask, gamma, lam, backwards=False)


def _gae_bootstrap_from_padding(rewards, values, mask, gamma, lam):
    return _gae_loop(rewards, values, mask, gamma, lam, mask_values=False)


def _gae_without_lambda(rewards, values, mask, gamma, lam):
    return _gae_loop(rewards, values, mask, gamma, lam, lam_in_recursion=False)


def _gae_returns_are_advantages(rewards, values, mask, gamma, lam):
    return _gae_loop(rewards, values, mask, gamma, lam, add_values=False)


def _gae_returns_at_padding(rewards, values, mask, gamma, lam):
    advantages, _ = _gae_loop(rewards, values, mask, gamma, lam)
    return advantages, advantages + values  # the value model's outputs at padding stay in


register(Exercise(
    name="gae",
    reference="helpers.ppo:gae",
    difficulty=3, importance=3, minutes=20,
    cases=[
        Case("one response of 4 tokens, gamma = 1, lam = 0.95", _gae_inputs([4], 4, 1.0, 0.95, 1)),
        Case("3 responses of lengths 5, 3, 1 (right padding), gamma = 1, lam = 0.95",
             _gae_inputs([5, 3, 1], 5, 1.0, 0.95, 2)),
        Case("gamma = 0.9, lam = 0.8 on 2 responses of lengths 6, 4", _gae_inputs([6, 4], 6, 0.9, 0.8, 3)),
        Case("lam = 1 (the Monte-Carlo return minus the value)", _gae_inputs([3, 5], 5, 1.0, 1.0, 4)),
        Case("lam = 0 (one-step TD errors)", _gae_inputs([4, 2], 4, 1.0, 0.0, 5)),
    ],
    bugs=[
        KnownBug("GAE runs backwards in time: start at the last token, A_t = delta_t + gamma * lam * A_{t+1}",
                 _gae_forwards),
        KnownBug("after a response's last real token the episode is over: the next value there is 0, not "
                 "the value model's output at a padding position (multiply values by the mask)",
                 _gae_bootstrap_from_padding),
        KnownBug("the recursion multiplies the next advantage by gamma * lam, not by gamma alone",
                 _gae_without_lambda),
        KnownBug("returns are advantages + values: the target the value model learns", _gae_returns_are_advantages),
        KnownBug("returns must be 0 at padding positions too: the values there are whatever the value "
                 "head printed, so multiply (advantages + values) by the mask", _gae_returns_at_padding),
    ],
    hints=[
        "delta_t = r_t + gamma * V_{t+1} - V_t, where V after the last real token is 0.",
        "Loop t from the last column down to 0, carrying A_{t+1}: A_t = delta_t + gamma * lam * A_{t+1}. "
        "With values multiplied by the mask first, padding adds nothing.",
        "Return (advantages * mask, (advantages + values) * mask).",
    ],
))


# --- clipped_policy_loss ----------------------------------------------------------------------


def _policy_inputs(lengths: list[int], width: int, spread: float, clip: float, seed: int) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        old = -2 * torch.rand(len(lengths), width, generator=g) - 0.1
        new = old + spread * torch.randn(len(lengths), width, generator=g)
        advantages = torch.randn(len(lengths), width, generator=g)
        return {"logprobs": _with_garbage(new, mask, g, -1.0).requires_grad_(),
                "old_logprobs": _with_garbage(old, mask, g, -3.0),
                "advantages": _with_garbage(advantages, mask, g),
                "mask": mask, "clip": clip}
    return make


def _surrogates(logprobs, old_logprobs, advantages, clip):
    ratio = torch.exp(logprobs - old_logprobs)
    return -advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)


def _pg_min(logprobs, old_logprobs, advantages, mask, clip=0.2):
    a, b = _surrogates(logprobs, old_logprobs, advantages, clip)
    return _masked_mean(torch.min(a, b), mask)


def _pg_no_clip(logprobs, old_logprobs, advantages, mask, clip=0.2):
    a, _ = _surrogates(logprobs, old_logprobs, advantages, clip)
    return _masked_mean(a, mask)


def _pg_only_clipped(logprobs, old_logprobs, advantages, mask, clip=0.2):
    _, b = _surrogates(logprobs, old_logprobs, advantages, clip)
    return _masked_mean(b, mask)


def _pg_no_mask(logprobs, old_logprobs, advantages, mask, clip=0.2):
    a, b = _surrogates(logprobs, old_logprobs, advantages, clip)
    return torch.max(a, b).mean()


def _pg_log_ratio(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = logprobs - old_logprobs
    a, b = -advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return _masked_mean(torch.max(a, b), mask)


def _pg_not_negated(logprobs, old_logprobs, advantages, mask, clip=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    a, b = advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return _masked_mean(torch.min(a, b), mask)


def _pg_mean_of_sequence_means(logprobs, old_logprobs, advantages, mask, clip=0.2):
    a, b = _surrogates(logprobs, old_logprobs, advantages, clip)
    return ((torch.max(a, b) * mask).sum(1) / mask.sum(1)).mean()


register(Exercise(
    name="clipped_policy_loss",
    reference="helpers.ppo:clipped_policy_loss",
    difficulty=2, importance=3, minutes=15,
    cases=[
        Case("ratios close to 1 (inside the clip range), no padding", _policy_inputs([5, 5], 5, 0.05, 0.2, 1)),
        Case("ratios far outside [0.8, 1.2], advantages of both signs", _policy_inputs([6, 6, 6], 6, 0.6, 0.2, 2)),
        Case("3 responses of lengths 5, 2, 3 (right padding)", _policy_inputs([5, 2, 3], 5, 0.4, 0.2, 3)),
        Case("clip = 0.1, responses of lengths 4 and 1", _policy_inputs([4, 1], 4, 0.3, 0.1, 4)),
    ],
    bugs=[
        KnownBug("clip the ratio, and take the max of the two NEGATED terms (the pessimistic bound): "
                 "max(-A * ratio, -A * clip(ratio)), not the min", _pg_min),
        KnownBug("clip the ratio to [1 - clip, 1 + clip]: without clipping nothing stops one batch from "
                 "moving the policy far", _pg_no_clip),
        KnownBug("keep the unclipped term too: loss = max(-A * ratio, -A * clip(ratio)); the clipped term "
                 "alone would reward some moves beyond the clip range", _pg_only_clipped),
        KnownBug("padding positions change your loss: apply the mask", _pg_no_mask),
        KnownBug("the ratio is exp(logp - logp_old): the inputs are log-probabilities", _pg_log_ratio),
        KnownBug("a loss is minimised: negate the surrogate (-A * ratio) and take the max of the negated "
                 "terms", _pg_not_negated),
        KnownBug("average over all real tokens of the batch at once (a masked token mean), not a mean of "
                 "per-response means", _pg_mean_of_sequence_means),
    ],
    hints=[
        "ratio = torch.exp(logprobs - old_logprobs): the probability of each sampled token now, divided "
        "by its probability when it was sampled.",
        "Two candidate losses per token: -advantages * ratio and -advantages * torch.clamp(ratio, 1 - clip, "
        "1 + clip). Keep the larger (torch.max): clipping may only make the objective more pessimistic.",
        "Finish with a masked mean: (loss * mask).sum() / mask.sum().",
    ],
))


# --- clipped_value_loss -----------------------------------------------------------------------


def _value_inputs(lengths: list[int], width: int, spread: float, clip: float, seed: int) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        old = torch.randn(len(lengths), width, generator=g)
        new = old + spread * torch.randn(len(lengths), width, generator=g)
        returns = old + torch.randn(len(lengths), width, generator=g)
        return {"values": _with_garbage(new, mask, g).requires_grad_(),
                "old_values": _with_garbage(old, mask, g, 2.0),
                "returns": returns * mask, "mask": mask, "clip": clip}
    return make


def _vf_min(values, old_values, returns, mask, clip=0.2):
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * _masked_mean(torch.min((values - returns) ** 2, (clipped - returns) ** 2), mask)


def _vf_no_clip(values, old_values, returns, mask, clip=0.2):
    return 0.5 * _masked_mean((values - returns) ** 2, mask)


def _vf_clip_the_value(values, old_values, returns, mask, clip=0.2):
    clipped = torch.clamp(values, -clip, clip)
    return 0.5 * _masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def _vf_no_mask(values, old_values, returns, mask, clip=0.2):
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


def _vf_no_half(values, old_values, returns, mask, clip=0.2):
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return _masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


register(Exercise(
    name="clipped_value_loss",
    reference="helpers.ppo:clipped_value_loss",
    difficulty=2, importance=2, minutes=10,
    cases=[
        Case("values that moved little since the rollout, no padding", _value_inputs([4, 4], 4, 0.05, 0.2, 1)),
        Case("values that moved far (beyond the clip range)", _value_inputs([5, 5, 5], 5, 1.0, 0.2, 2)),
        Case("3 responses of lengths 4, 1, 3 (right padding)", _value_inputs([4, 1, 3], 4, 0.5, 0.2, 3)),
        Case("clip = 0.5", _value_inputs([6, 3], 6, 0.8, 0.5, 4)),
    ],
    bugs=[
        KnownBug("take the max of the clipped and unclipped squared errors (pessimistic), not the min", _vf_min),
        KnownBug("clip the new value to old_values +- clip and compute a second squared error with it",
                 _vf_no_clip),
        KnownBug("clip the CHANGE of the value around old_values (old + clamp(v - old, -clip, clip)), "
                 "not the value itself", _vf_clip_the_value),
        KnownBug("padding positions change your loss: apply the mask", _vf_no_mask),
        KnownBug("the value loss is 0.5 * the squared error (so its gradient is v - return)", _vf_no_half),
    ],
    hints=[
        "clipped = old_values + torch.clamp(values - old_values, -clip, clip).",
        "Per token: torch.max((values - returns) ** 2, (clipped - returns) ** 2); then 0.5 * a masked mean.",
    ],
))


# --- masked_whiten ----------------------------------------------------------------------------


def _whiten_inputs(lengths: list[int], width: int, shift: float, seed: int) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = _right_mask(lengths, width)
        x = shift + 2 * torch.randn(len(lengths), width, generator=g)
        return {"x": _with_garbage(x, mask, g, 20.0), "mask": mask}
    return make


def _var(x, mask, unbiased=True):
    mean = _masked_mean(x, mask)
    n = mask.sum()
    return ((x - mean) ** 2 * mask).sum() / (n - 1 if unbiased else n)


def _whiten_unmasked(x, mask):
    return (x - x.mean()) / torch.sqrt(x.var() + 1e-8) * mask


def _whiten_padding_kept(x, mask):
    return (x - _masked_mean(x, mask)) / torch.sqrt(_var(x, mask) + 1e-8)


def _whiten_per_row(x, mask):
    rows = []
    for row, m in zip(x, mask):
        real = row[m.bool()]
        std = real.std() if real.numel() > 1 else torch.tensor(1.0)
        rows.append((row - real.mean()) / (std + 1e-8) * m)
    return torch.stack(rows)


def _whiten_biased(x, mask):
    return (x - _masked_mean(x, mask)) / torch.sqrt(_var(x, mask, unbiased=False) + 1e-8) * mask


def _whiten_by_variance(x, mask):
    return (x - _masked_mean(x, mask)) / (_var(x, mask) + 1e-8) * mask


def _whiten_not_centred(x, mask):
    return x / torch.sqrt(_var(x, mask) + 1e-8) * mask


register(Exercise(
    name="masked_whiten",
    reference="helpers.ppo:masked_whiten",
    difficulty=1, importance=2, minutes=10,
    cases=[
        Case("a batch without padding", _whiten_inputs([5, 5, 5], 5, 0.0, 1)),
        Case("3 rows of lengths 6, 2, 4 (right padding)", _whiten_inputs([6, 2, 4], 6, 0.0, 2)),
        Case("values far from 0 (mean about 10)", _whiten_inputs([4, 3], 4, 10.0, 3)),
        Case("one row that is mostly padding", _whiten_inputs([7, 1, 5], 7, -1.0, 4)),
    ],
    bugs=[
        KnownBug("whitening must ignore padding when computing mean and variance: use masked statistics",
                 _whiten_unmasked),
        KnownBug("set padding positions to 0 in the result (multiply by the mask)", _whiten_padding_kept),
        KnownBug("whiten over the whole batch (one mean and one variance for all real tokens), not each "
                 "row separately", _whiten_per_row),
        KnownBug("use the unbiased variance: divide the sum of squares by n - 1, as torch.var does",
                 _whiten_biased),
        KnownBug("divide by the standard deviation (the square root of the variance), not by the variance",
                 _whiten_by_variance),
        KnownBug("subtract the mean as well: whitened values are centred at 0", _whiten_not_centred),
    ],
    hints=[
        "mean = (x * mask).sum() / mask.sum() over every real position of the batch.",
        "var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1); result = (x - mean) / sqrt(var + 1e-8) * mask.",
    ],
))
