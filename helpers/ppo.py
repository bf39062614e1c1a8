"""Step 3 of InstructGPT: reinforcement learning against the reward model with PPO.

The policy (a copy of the SFT model) answers prompts; the reward model scores each answer; PPO
raises the probability of answers that scored better than expected. A per-token KL penalty to
the frozen SFT model (the "reference") keeps the policy near the text the reward model was
trained on, where its scores still mean something:

    objective = E[ r(x, y) - beta * log(pi(y|x) / pi_SFT(y|x)) ]  (+ gamma * E_pretrain[log pi(x)])

Read ``train_ppo`` from top to bottom: it is the whole algorithm as one loop.

    for each iteration:
        1. rollout   sample a response to each prompt of a batch (temperature T), then compute
                     the log-probabilities of the sampled tokens under the policy and the
                     reference, and the value of every prefix
        2. score     the reward model's scalar for (prompt, response), read at its last token
        3. reward    per token: -beta * KL_t, plus the score on the last token of the response
        4. advantage GAE over the response tokens, whitened over the batch
        5. update    several epochs of minibatches: clipped policy loss + clipped value loss
                     (+ the pretraining loss for PPO-ptx)
        6. beta      a fixed KL coefficient, or adapted toward a target KL

Every implementation detail is a named option of ``PPOConfig``, and each diagnostic is computed
right beside the quantity it checks.

Tensor layout. A rollout is one batch of token rows ``[prompt | response]``: prompts are
left-padded (so every prompt ends in the same column, ``prompt_length - 1``) and responses are
right-padded after their first EOS. Every per-token quantity of PPO (log-probs, values, KL,
rewards, advantages) has shape ``(batch, response_length)`` and lines up with the response
tokens; ``response_mask`` is 1 on the response's real tokens (its EOS included) and 0 on the
padding after them. The functions below only ever look at the mask, never at a layout, so they
are also right for masks of any other shape (left padding, for one). The forward passes that
read log-probs, values and scores off the models are in ``helpers.logprobs`` (for speed, on the
sequences packed several to a row without padding: the same numbers, up to float rounding), the
masked means and variances in ``helpers.masked``.

Two models are trained: the policy (a causal LM) and the value model (a separate network
initialized from the reward model, as in InstructGPT). Two are frozen: the reference (SFT) and
the reward model. Every model runs in eval mode the whole time: ``eval()`` switches dropout off
(it would make two forward passes of the same weights disagree, so the probability ratio would
not start at 1) and does not stop gradients.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from helpers import precision
from helpers.generation import generate
from helpers.labelers import gold_scores
from helpers.logprobs import (pack_sequences, packed_response_logprobs, packed_response_values,
                              response_logprobs, response_values, sequence_scores)
from helpers.masked import masked_mean, masked_var, masked_whiten
from helpers.models import last_real_index
from helpers.pretrain import next_token_loss
from helpers.progress import tqdm

# --------------------------------------------------------------------------------------------
# Settings: every implementation detail has a name
# --------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    """One PPO run. The defaults are the tiny profile's full run (the stage prints how long it
    will take on your machine).

    InstructGPT's values are quoted where ours differ; ours are scaled to a 1M-parameter model
    trained for minutes.
    """

    # --- how long, how big -----------------------------------------------------------------
    total_episodes: int = 3072  # prompts answered and learned from (InstructGPT: 256k)
    batch_size: int = 64  # episodes per rollout (InstructGPT: 512)
    minibatch_size: int = 16  # episodes per gradient step (InstructGPT: 64)
    ppo_epochs: int = 4  # passes over each rollout batch: reuse costly samples, within the clip
    # --- rollout ----------------------------------------------------------------------------
    temperature: float = 1.0  # sampling temperature; log-probs always use logits / temperature
    max_new_tokens: int = 40  # longest response; the world's answers need fewer than 30 tokens
    # A response cut off at max_new_tokens never said it was done: subtract this from its score
    # (None: no penalty). A common guard against rambling.
    missing_eos_penalty: float | None = None
    # --- score ------------------------------------------------------------------------------
    # Rescale the reward model's scores with a gain and a bias so that responses of the initial
    # (SFT) policy score about N(0, 1): beta and the clip ranges then mean the same for any RM.
    reward_norm: bool = True
    reward_norm_prompts: int = 128  # SFT responses sampled to measure that mean and spread
    score_clip: float | None = None  # clip the (normalized) score to [-c, c]; None: no clipping
    # --- KL penalty -------------------------------------------------------------------------
    # beta. InstructGPT used 0.02 and Stiennon et al. 0.05, with reward models far more accurate
    # than the tiny profile's. A less accurate RM has more errors for the policy to exploit, so it
    # needs a tighter leash: 0.2 is the value that gains most on the gold labeler without the KL
    # running away late in the run (the sweep: benchmarks/ppo_rewards.py --runs rm --set kl_coef=...).
    kl_coef: float = 0.2
    kl_estimator: str = "k1"  # "k1": logp - logp_ref; "k3": (r - 1) - log r, r = p_ref / p
    # Adaptive beta (Ziegler et al. 2019) when set: steer the mean KL per response toward this
    # many nats. None: beta stays kl_coef.
    kl_target: float | None = None
    # Episodes over which beta changes by the factor (1 + e). Ziegler et al.: 10,000, in runs far
    # longer than ours; over our few thousand episodes beta would then barely move.
    kl_horizon: int = 2000
    # --- advantages -------------------------------------------------------------------------
    gamma: float = 1.0  # no discount: the reward arrives at the end of a short response
    lam: float = 0.95  # GAE lambda: trades the value model's bias against sampling variance
    whiten_advantages: bool = True  # zero mean, unit variance over the batch (mask-aware)
    # --- losses -----------------------------------------------------------------------------
    clip_range: float = 0.2  # policy ratio kept in [1 - c, 1 + c]
    value_clip_range: float = 0.2  # a value may move at most this far from its rollout value
    vf_coef: float = 0.1  # weight of the value loss in the summed loss (see ``ppo_update``)
    ptx_coef: float = 0.0  # gamma of PPO-ptx: weight of the pretraining loss (0: plain PPO)
    ptx_batch_size: int = 8  # pretraining blocks per gradient step when ptx_coef > 0
    # --- optimization -----------------------------------------------------------------------
    learning_rate: float = 3e-5  # policy
    value_learning_rate: float = 1e-4  # value model (it starts far from the returns)
    adam_eps: float = 1e-5
    max_grad_norm: float = 1.0  # gradient norm clipped per model
    # Let the learning rates fall linearly to 0 over the run (CleanRL's default). Off here: with
    # annealing a short run spends its last iterations barely moving.
    anneal_lr: bool = False
    # Stop an iteration's epochs early once the policy moved this far from the rollout policy
    # (approx KL); None: always run all ppo_epochs.
    target_approx_kl: float | None = None
    # --- speed (no effect on the numbers beyond float rounding) ------------------------------
    # Compute log-probs and values on packed sequences (``pack_sequences``: several sequences to
    # a row, no padding columns) instead of the padded batch. False: the plain padded batch.
    pack_sequences: bool = True
    # --- bookkeeping ------------------------------------------------------------------------
    samples_to_show: int = 3  # (prompt, response, score) triples passed to the callback
    seed: int = 0

    @property
    def n_iterations(self) -> int:
        return max(1, self.total_episodes // self.batch_size)

    def validate(self) -> None:
        if self.batch_size % self.minibatch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of "
                             f"minibatch_size ({self.minibatch_size})")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.temperature <= 0:
            raise ValueError("PPO samples with a temperature > 0 (greedy decoding has no log-probs)")


# --------------------------------------------------------------------------------------------
# The pieces of PPO's math (each one an exercise)
# --------------------------------------------------------------------------------------------


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                 estimator: str = "k1") -> torch.Tensor:
    """A per-token estimate of KL(policy || reference) at the sampled tokens: (batch, R).

    The exact KL sums over the whole vocabulary; PPO uses one-sample estimates at the token that
    was actually sampled from the policy:
      k1 = log p(token) - log p_ref(token): unbiased, can be negative for a single token;
      k3 = (r - 1) - log r with r = p_ref / p: unbiased too, never negative, lower variance.
    Padding positions are 0.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio  # (r - 1) - log r, with log r = -log_ratio
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")
    return kl * mask.to(kl.dtype)


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards: -beta * kl_t everywhere, plus the score on each response's last real token.

    score: (batch,); kl and mask: (batch, R). The reward model judges the whole response, so its
    score arrives when the response is complete: on its last real token (the EOS, or the last
    token of a response that was cut off), not in the last column, which for a short response
    is padding. Padding gets reward 0.
    """
    mask = mask.to(kl.dtype)
    rewards = -beta * kl * mask
    rows = torch.arange(rewards.size(0), device=rewards.device)
    last = last_real_index(mask)
    rewards[rows, last] = rewards[rows, last] + score.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the response tokens: (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t            (V after the last real token is 0: done)
    A_t = delta_t + gamma * lam * A_{t+1}            (computed backwards, from the end)
    returns_t = A_t + V_t                            (the value model's regression target)

    "t + 1" is the next REAL token: padding positions are skipped, and their values (the value
    head outputs numbers there too) never enter. Both outputs are 0 on padding.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        real = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * real
        # a padding column leaves "the next real token" as it was
        next_value = torch.where(real.bool(), values[:, t], next_value)
        next_advantage = torch.where(real.bool(), advantage, next_advantage)
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, as a loss to minimise: the masked mean over tokens.

    ratio = pi(token) / pi_old(token) = exp(logp - logp_old). The surrogate ratio * A rewards
    raising the probability of tokens with positive advantage; clipping the ratio to
    [1 - clip, 1 + clip] removes the incentive to move further than that in one batch. Of the
    two negated terms we take the max (the pessimistic bound): clipping may only ever make the
    objective worse, never better.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return masked_mean(torch.max(unclipped, clipped), mask)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * the masked mean of the larger of two squared errors.

    The prediction may move at most ``clip`` away from the value it had during the rollout;
    as for the policy, the max of the clipped and unclipped errors is the pessimistic choice.
    The 0.5 makes the gradient (v - return).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    errors = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    return 0.5 * masked_mean(errors, mask)


def ppo_ptx_loss(policy_loss: torch.Tensor, value_loss: torch.Tensor, ptx_logits: torch.Tensor,
                 ptx_ids: torch.Tensor, ptx_mask: torch.Tensor, vf_coef: float = 0.1,
                 ptx_coef: float = 1.0) -> torch.Tensor:
    """The loss one PPO-ptx gradient step minimises (what ``ppo_update`` computes):

        policy_loss + vf_coef * value_loss + ptx_coef * NLL(pretraining text)

    InstructGPT's objective adds gamma * E_pretrain[log pi(x)] to the reward it *maximises*; as
    a loss to minimise that term becomes + gamma * the negative log-likelihood, i.e. the
    pretraining loss (``next_token_loss``: shifted by one, mean over real target tokens) of a
    batch of web text. ptx_coef = 0 is plain PPO.
    """
    loss = policy_loss + vf_coef * value_loss
    if ptx_coef == 0:
        return loss
    return loss + ptx_coef * next_token_loss(ptx_logits, ptx_ids, ptx_mask)


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets) over real tokens.

    1: the value model predicts the returns perfectly; 0: no better than a constant; below 0:
    worse than a constant (typical right after it was initialized from the reward model).
    """
    var_targets = masked_var(targets, mask)
    if var_targets.item() == 0:
        return float("nan")
    return float(1 - masked_var(targets - predictions, mask) / var_targets)


class AdaptiveKLController:
    """Ziegler et al. (2019): steer beta so the KL per response tracks a target.

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_episodes / horizon).
    KL too high: beta grows and pulls the policy back; too low: beta shrinks and lets it move.
    """

    def __init__(self, beta: float, target: float, horizon: int):
        self.value, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_episodes: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value


class FixedKLController:
    """beta stays where it was set."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, kl: float, n_episodes: int) -> float:
        return self.value


# --------------------------------------------------------------------------------------------
# Steps 1-2: rollout and score
# --------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One batch of episodes; every tensor is on the models' device."""

    examples: list  # the prompts (world Examples)
    responses: list[str]  # response texts (before the first EOS)
    input_ids: torch.Tensor  # (B, P + R) [left-padded prompt | right-padded response]
    attention_mask: torch.Tensor  # (B, P + R)
    prompt_length: int  # P: the column where responses start
    response_mask: torch.Tensor  # (B, R) 1 on response tokens (EOS included)
    ended_with_eos: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor = None  # (B, R) policy at sampling time
    ref_logprobs: torch.Tensor = None  # (B, R) frozen SFT model
    values: torch.Tensor = None  # (B, R) value model
    entropy: torch.Tensor = None  # (B, R) entropy of the policy's next-token distribution


def sample_responses(policy, tokenizer, examples: list, config: PPOConfig, seed: int) -> Rollout:
    """Sample one response per prompt with ``helpers.generation.generate``.

    ``generate`` already does what a rollout needs: chat-rendered prompts left-padded with a pad
    token distinct from EOS, position ids counted over real tokens, sampling at the temperature
    in eval mode, every response truncated after its first EOS (later columns are padding), and
    the token ids and masks returned alongside the text.
    """
    device = next(policy.parameters()).device
    texts, d = generate(policy, tokenizer, [e.prompt for e in examples], max_new_tokens=config.max_new_tokens,
                        temperature=config.temperature, chat=True, seed=seed,
                        batch_size=len(examples), return_details=True)
    return Rollout(examples=list(examples), responses=texts, input_ids=d["input_ids"].to(device),
                   attention_mask=d["attention_mask"].to(device), prompt_length=d["prompt_length"],
                   response_mask=d["response_mask"].to(device),
                   ended_with_eos=d["ended_with_eos"].to(device))


class Scorer:
    """From a batch of episodes to one scalar score each: reward model (or function),
    normalization, clipping, and the missing-EOS penalty, in that order.

    ``reward_fn(examples, responses) -> list[float]`` replaces the reward model, e.g. the gold
    labeler (the "true" reward) or a toy reward in a test.
    """

    def __init__(self, reward_model=None, reward_fn: Callable | None = None):
        if (reward_model is None) == (reward_fn is None):
            raise ValueError("give exactly one of reward_model and reward_fn")
        self.reward_model, self.reward_fn = reward_model, reward_fn
        self.gain, self.bias = 1.0, 0.0

    @torch.no_grad()
    def raw(self, rollout: Rollout) -> torch.Tensor:
        """The reward model's score (or reward_fn's), before any rescaling: (B,)."""
        if self.reward_fn is not None:
            values = self.reward_fn(rollout.examples, rollout.responses)
            return torch.as_tensor([float(v) for v in values], device=rollout.input_ids.device)
        return sequence_scores(self.reward_model, rollout.input_ids, rollout.attention_mask)

    def fit_normalization(self, raw_scores: torch.Tensor) -> None:
        """gain, bias such that gain * score + bias has mean 0 and std 1 on these scores."""
        std = raw_scores.std().item() if raw_scores.numel() > 1 else 1.0
        self.gain = 1.0 / max(std, 1e-6)
        self.bias = -raw_scores.mean().item() * self.gain

    def final(self, raw_scores: torch.Tensor, ended_with_eos: torch.Tensor, config: PPOConfig) -> torch.Tensor:
        score = self.gain * raw_scores + self.bias
        if config.score_clip is not None:
            score = score.clamp(-config.score_clip, config.score_clip)
        if config.missing_eos_penalty is not None:
            score = score - config.missing_eos_penalty * (~ended_with_eos).to(score.dtype)
        return score


def gold_reward(examples: list, responses: list[str]) -> list[float]:
    """The gold labeler's score as a reward function (``reward_fn=gold_reward``): PPO against the
    "true" preferences instead of a learned reward model, the comparison that shows
    overoptimization."""
    return gold_scores(examples, responses)


@torch.no_grad()
def evaluate_rollout(rollout: Rollout, policy, reference, value_model, config: PPOConfig) -> Rollout:
    """Fill in the rollout's log-probs (policy and reference), entropy and values.

    All three with the models in eval mode and at the sampling temperature, on exactly the
    sampled tokens. These are the "old" numbers PPO's ratio and value clipping compare against.
    """
    for model in (policy, reference, value_model):
        model.eval()  # dropout off (it does not stop gradients; see the module docstring)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
    with precision.autocast(rollout.input_ids.device):  # 16-bit products on a GPU only
        if config.pack_sequences:  # the same numbers, computed without padding (only for speed)
            packed = pack_sequences(*args)
            rollout.logprobs, rollout.entropy = packed_response_logprobs(policy, packed, config.temperature,
                                                                         with_entropy=True)
            # The reference at the same temperature: the KL is between the two sampling distributions.
            rollout.ref_logprobs = packed_response_logprobs(reference, packed, config.temperature)
            rollout.values = packed_response_values(value_model, packed)
        else:
            rollout.logprobs, rollout.entropy = response_logprobs(policy, *args, config.temperature,
                                                                  with_entropy=True)
            rollout.ref_logprobs = response_logprobs(reference, *args, config.temperature)
            rollout.values = response_values(value_model, *args)
    return rollout


# --------------------------------------------------------------------------------------------
# Step 5: the PPO update
# --------------------------------------------------------------------------------------------


def make_optimizer(policy, value_model, config: PPOConfig) -> torch.optim.Optimizer:
    """One AdamW with two parameter groups: the policy's and the value model's.

    The loss we minimise is policy_loss + vf_coef * value_loss. With a shared network (one body,
    two heads) vf_coef balances the two gradients. Our value model is a separate network, so
    each loss only reaches its own parameters, and Adam divides every gradient by its own
    running scale: multiplying a group's loss by a constant barely changes its step. Here the
    value learning rate is the real knob; vf_coef is kept so the summed loss reads like the
    papers' (and matters again in a shared-body setup).
    """
    # fused=True: one kernel updates every tensor (the same arithmetic as the loop over tensors,
    # much faster for our small models, whose many small tensors make Adam's per-tensor
    # overhead a visible share of a step). Only on devices that have the fused kernel.
    fused = next(policy.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW([
        {"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
        {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": config.value_learning_rate},
    ], eps=config.adam_eps, weight_decay=0.0, fused=fused)


def ppo_update(policy, value_model, optimizer, rollout: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, config: PPOConfig, generator: torch.Generator,
               ptx_batches: Iterator | None = None) -> dict:
    """Several epochs of minibatch steps on one rollout batch; returns the update's diagnostics."""
    mask = rollout.response_mask
    n = mask.size(0)
    scaler = precision.grad_scaler(mask.device)  # passes everything through except in float16
    sums: dict[str, float] = {}
    steps = 0
    first_ratio_error = None
    stopped_early = False

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + float(value)

    for epoch in range(config.ppo_epochs):
        order = torch.randperm(n, generator=generator).to(mask.device)
        for start in range(0, n, config.minibatch_size):
            idx = order[start:start + config.minibatch_size]
            m = mask[idx]

            args = (rollout.input_ids[idx], rollout.attention_mask[idx], rollout.prompt_length)
            with precision.autocast(mask.device):  # 16-bit products on a GPU; float32 on a CPU
                if config.pack_sequences:  # the same numbers, computed without padding (only for speed)
                    packed = pack_sequences(*args)
                    logprobs = packed_response_logprobs(policy, packed, config.temperature)
                    values = packed_response_values(value_model, packed)
                else:
                    logprobs = response_logprobs(policy, *args, config.temperature)
                    values = response_values(value_model, *args)

            policy_loss = clipped_policy_loss(logprobs, rollout.logprobs[idx], advantages[idx], m,
                                              config.clip_range)
            value_loss = clipped_value_loss(values, rollout.values[idx], returns[idx], m,
                                            config.value_clip_range)
            ptx = (None, None, None)
            if config.ptx_coef > 0:
                # PPO-ptx: keep the pretraining objective alive, so the policy does not forget
                # what it knew outside the RL prompts (InstructGPT's fix for the alignment tax).
                block = next(ptx_batches).to(mask.device)
                block_mask = torch.ones_like(block)
                with precision.autocast(mask.device):
                    ptx_logits = policy(input_ids=block, attention_mask=block_mask, use_cache=False).logits
                ptx = (ptx_logits.float(), block, block_mask)
            loss = ppo_ptx_loss(policy_loss, value_loss, *ptx, config.vf_coef, config.ptx_coef)
            if config.ptx_coef > 0:  # the pretraining loss is what the total adds to PPO's two terms
                ptx_term = loss.detach() - (policy_loss.detach() + config.vf_coef * value_loss.detach())
                add("ptx_loss", ptx_term.item() / config.ptx_coef)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # float16 only: scaled so small gradients do not underflow
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()

            # Diagnostics of this step, beside the quantities they check.
            with torch.no_grad():
                log_ratio = logprobs - rollout.logprobs[idx]
                ratio = log_ratio.exp()
                if first_ratio_error is None:
                    # Nothing has been updated yet: the ratio must be 1 up to float rounding. If
                    # not, the rollout and the update compute log-probs differently (dropout,
                    # temperature, padding, position ids).
                    first_ratio_error = masked_max_abs(ratio - 1, m)
                # k3 estimate of KL(old policy || new policy), per token (CleanRL's approx_kl)
                approx_kl = masked_mean((ratio - 1) - log_ratio, m).item()
                add("approx_kl", approx_kl)
                add("clipfrac", masked_mean(((ratio - 1).abs() > config.clip_range).float(), m).item())
                moved = (values - rollout.values[idx]).abs() > config.value_clip_range
                add("value_clipfrac", masked_mean(moved.float(), m).item())
                add("policy_loss", policy_loss.item())
                add("value_loss", value_loss.item())
                add("ratio_mean", masked_mean(ratio, m).item())
            steps += 1
        if config.target_approx_kl is not None and approx_kl > config.target_approx_kl:
            stopped_early = True
            break

    stats = {name: total / steps for name, total in sums.items()}
    stats.update(first_ratio_error=first_ratio_error, update_steps=steps, stopped_early=stopped_early)
    return stats


def masked_max_abs(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x.abs() * mask.to(x.dtype)).max()) if mask.any() else 0.0


# --------------------------------------------------------------------------------------------
# Models for a run
# --------------------------------------------------------------------------------------------


def value_model_from(reward_model):
    """A trainable copy of the reward model to serve as the value model (InstructGPT's choice).

    Starting from the RM, the value model already knows what a good response looks like; a
    fresh head would start with random values and slow the first iterations down.
    """
    value_model = copy.deepcopy(reward_model)
    for p in value_model.parameters():
        p.requires_grad_(True)
    return value_model.eval()


@dataclass
class PPOModels:
    """The four models of a PPO run, and the tokenizer they share."""

    policy: object  # trained: starts as a copy of the SFT model
    reference: object  # frozen: the SFT model itself, the KL anchor
    value_model: object  # trained: starts as a copy of the reward model
    reward_model: object  # frozen
    tokenizer: object


def prepare_models(sft, rm) -> PPOModels:
    """The models of a PPO run from the "sft" and "rm" artifacts (``load_or_train``).

    The policy is a trainable copy of the SFT model, which itself stays frozen as the reference;
    the value model is a trainable copy of the reward model (``value_model_from``).
    """
    reference = sft.model
    policy = copy.deepcopy(reference)
    for p in policy.parameters():
        p.requires_grad_(True)
    return PPOModels(policy=policy, reference=reference, value_model=value_model_from(rm.model),
                     reward_model=rm.model, tokenizer=sft.tokenizer)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _prompt_batches(prompts: Sequence, batch_size: int, seed: int) -> Iterator[list]:
    """Batches of prompts, reshuffled on every pass over the list (with a fixed seed)."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [prompts[i] for i in order[start:start + batch_size]]
        if len(order) < batch_size:  # fewer prompts than a batch: repeat them
            yield [prompts[order[i % len(order)]] for i in range(batch_size)]


def train_ppo(models: PPOModels, prompts: list, config: PPOConfig,
              callback: Callable[[int, dict], None] | None = None, progress: bool = True, *,
              reward_fn: Callable | None = None, gold_fn: Callable | None = None,
              ptx_batches: Iterator | None = None) -> dict:
    """Train ``models.policy`` and ``models.value_model`` in place with PPO; return the history
    (dict of lists).

    models: the run's four models and their tokenizer (``prepare_models``): the policy to train
    (start: a copy of the SFT model), the frozen reference (the SFT model), the value model (a
    sequence classifier with one label; start: a copy of the reward model, see
    ``value_model_from``) and the frozen reward model, which ``reward_fn(examples, responses) ->
    list[float]`` replaces when given (``models.reward_model`` may then be None). prompts: world
    ``Example``s.
    gold_fn(examples, responses) -> list[float]: if given, the gold score of every rollout response is
    logged (free: the responses exist anyway). ptx_batches: an iterator of token blocks
    (``pretraining_batches``), needed when ``config.ptx_coef > 0``.

    callback(iteration, stats) runs after every iteration (stats: this iteration's numbers and
    a few samples), e.g. to redraw a live dashboard.
    """
    policy, reference, value_model, tokenizer = models.policy, models.reference, models.value_model, models.tokenizer
    reward_model = None if reward_fn is not None else models.reward_model
    config.validate()
    if config.ptx_coef > 0 and ptx_batches is None:
        raise ValueError("ptx_coef > 0 needs ptx_batches (see pretrain.pretraining_batches)")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    scorer = Scorer(reward_model, reward_fn)
    # eval() switches dropout off; gradients still flow. Every forward pass of the same weights
    # now gives the same numbers, so the first ratio is exactly 1. The frozen models are only
    # ever run under torch.no_grad(), so their parameters are left as they are.
    for model in (policy, value_model, reference, reward_model):
        if model is not None:
            model.eval()
    optimizer = make_optimizer(policy, value_model, config)
    kl_control = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                  if config.kl_target is not None else FixedKLController(config.kl_coef))
    batches = _prompt_batches(prompts, config.batch_size, config.seed)

    history: dict[str, list] = {}
    if config.reward_norm:
        # Score a sample of the initial policy's (= SFT's) own responses and rescale to N(0, 1).
        started = time.perf_counter()
        sample = random.Random(config.seed + 1).sample(list(prompts), min(config.reward_norm_prompts, len(prompts)))
        rollout = sample_responses(policy, tokenizer, sample, config, seed=config.seed + 10_007)
        scorer.fit_normalization(scorer.raw(rollout))
        history["reward_norm_seconds"] = [time.perf_counter() - started]
    history["reward_gain"], history["reward_bias"] = [scorer.gain], [scorer.bias]

    n_iterations = config.n_iterations
    bar = tqdm(range(n_iterations), desc="PPO", disable=not progress)
    for iteration in bar:
        if config.anneal_lr:
            frac = 1.0 - iteration / n_iterations
            optimizer.param_groups[0]["lr"] = frac * config.learning_rate
            optimizer.param_groups[1]["lr"] = frac * config.value_learning_rate
        seconds: dict[str, float] = {}

        # 1. rollout: sample, then log-probs and values of exactly the sampled tokens
        examples = next(batches)
        with _timed(seconds, "time_generation"):
            rollout = sample_responses(policy, tokenizer, examples, config,
                                       seed=config.seed * 1_000_003 + iteration)
        with _timed(seconds, "time_forward"):
            evaluate_rollout(rollout, policy, reference, value_model, config)
        mask = rollout.response_mask

        # 2. score: one scalar per response
        with _timed(seconds, "time_scoring"):
            raw_score = scorer.raw(rollout)
            score = scorer.final(raw_score, rollout.ended_with_eos, config)

        # 3. reward per token: KL penalty everywhere, the score on the last real token
        beta = kl_control.value
        kl = per_token_kl(rollout.logprobs, rollout.ref_logprobs, mask, config.kl_estimator)
        rewards = token_rewards(score, kl, mask, beta)
        kl_per_response = kl.sum(1)  # KL(pi || pi_SFT) of a whole response: sum over its tokens

        # 4. advantages: GAE over response tokens, whitened over the batch
        advantages, returns = gae(rewards, rollout.values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        # 5. update: epochs x minibatches of clipped policy and value losses
        with _timed(seconds, "time_update"):
            update = ppo_update(policy, value_model, optimizer, rollout, advantages, returns, config,
                                generator, ptx_batches)

        # 6. beta: adapt toward the target KL (no-op when fixed)
        kl_control.update(kl_per_response.mean().item(), config.batch_size)

        # 7. diagnostics of this iteration
        lengths = mask.sum(1).float()
        stats = {
            "iteration": iteration + 1,
            "episodes": (iteration + 1) * config.batch_size,
            "score": raw_score.mean().item(),  # the reward model's score (demonstrations ~ 0)
            "score_normalized": score.mean().item(),  # what PPO optimizes (with the KL term)
            "reward": (score - beta * kl_per_response).mean().item(),  # the whole objective
            "kl": kl_per_response.mean().item(),  # nats per response
            "entropy": masked_mean(rollout.entropy, mask).item(),  # nats per token
            "explained_variance": explained_variance(rollout.values, returns, mask),
            "value_mean": masked_mean(rollout.values, mask).item(),
            "response_length": lengths.mean().item(),
            "eos_share": rollout.ended_with_eos.float().mean().item(),
            "beta": beta,
            "learning_rate": optimizer.param_groups[0]["lr"],
            **update,
            **seconds,
        }
        if gold_fn is not None:
            stats["gold"] = sum(gold_fn(rollout.examples, rollout.responses)) / len(examples)
        for name, value in stats.items():
            history.setdefault(name, []).append(value)
        bar.set_postfix(score=f"{stats['score']:.2f}", kl=f"{stats['kl']:.2f}",
                        **({"gold": f"{stats['gold']:.2f}"} if "gold" in stats else {}))
        if callback is not None:
            shown = min(config.samples_to_show, len(examples))
            samples = [{"prompt": rollout.examples[i].prompt, "response": rollout.responses[i],
                        "score": raw_score[i].item()} for i in range(shown)]
            callback(iteration, {**stats, "samples": samples})
    bar.close()
    return history


@contextlib.contextmanager
def _timed(seconds: dict, name: str):
    """Add the seconds spent inside the ``with`` block to ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
