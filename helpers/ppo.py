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
are also right for masks of any other shape (left padding, for one). For speed, the rollout's
forward passes and the update's see the sequences packed several to a row without padding
(``pack_sequences``); that gives the same numbers as the padded batch, up to float rounding.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers.models import last_real_index, position_ids_from_mask, token_values
from helpers.reward import pooled_scores

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
    # than the tiny profile's (about 66% held-out accuracy against the labelers' 70%). Here, win
    # rate over SFT by the gold labeler: beta 0 drifted to 7 nats and lost (45%); 0.05 reached
    # 72% at 1.6 nats; 0.1 ran away late (KL 3-4 nats, 63%); 0.2 gave 72% at about 1 nat, the
    # safest of them (benchmarks/ppo_rewards.py --runs rm --set kl_coef=...).
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

    @classmethod
    def fast(cls, **changes) -> "PPOConfig":
        """A smoke run of a few seconds."""
        return cls(**{**dict(total_episodes=16, batch_size=8, minibatch_size=4, ppo_epochs=2,
                             max_new_tokens=16, reward_norm_prompts=8), **changes})


# --------------------------------------------------------------------------------------------
# Masked statistics (padding must never count)
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (over all of them, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (with Bessel's n - 1 by default, as torch.var)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    squares = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        squares = squares * n / (n - 1).clamp(min=1.0)
    return squares


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` shifted and scaled to mean 0 and variance 1 over the real positions of the whole batch.

    Padding takes no part in the mean or the variance (it would drag both toward its own
    values) and is set to 0 in the result. Whitening advantages makes the size of a policy step
    independent of the reward's scale, and centres them: about half of the tokens are pushed
    up, half down.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.to(x.dtype)


# --------------------------------------------------------------------------------------------
# Forward passes: log-probs of the sampled tokens, values, scores
# --------------------------------------------------------------------------------------------


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                      temperature: float = 1.0, with_entropy: bool = False):
    """Log-probability of each response token under ``model`` at ``temperature``: (batch, R).

    ``input_ids`` is ``[prompt | response]`` with the response starting at column
    ``prompt_length``. The logits at column t predict the token at t + 1, so the response's R
    tokens are predicted by columns prompt_length - 1 ... prompt_length + R - 2.

    The logits are divided by the sampling temperature: the tokens were drawn from
    softmax(logits / T), so that is the distribution whose probabilities PPO's ratio compares.
    Using plain logits here would make the ratio differ from 1 before any update.

    With ``with_entropy=True`` also returns the entropy of the whole next-token distribution at
    every response position (batch, R).
    """
    response_ids = input_ids[:, prompt_length:]
    # Only the last R + 1 columns need the language-model head (a vocabulary-wide matmul).
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                logits_to_keep=response_ids.size(1) + 1, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    all_logprobs = F.log_softmax(logits, dim=-1)
    logprobs = all_logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logprobs
    entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
    return logprobs, entropy


def response_values(value_model, input_ids, attention_mask, prompt_length: int) -> torch.Tensor:
    """V(state before each response token): (batch, R).

    The state before response token t is everything up to token t - 1, whose last position is
    column prompt_length + t - 1: the same columns whose logits predict the response tokens.
    """
    values = token_values(value_model, input_ids, attention_mask)
    return values[:, prompt_length - 1:-1]


def sequence_scores(reward_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reward model's score of each row: (batch,). Read at the last real token, or averaged
    over the answer's tokens if the RM was trained that way (``helpers.reward.POOLINGS``).

    We score the exact tokens that were sampled (decoding to text and re-tokenizing could
    change them) and find the last real token from the attention mask (not from the pad id: a
    policy can sample the pad token itself). ``config.reward_offset`` shifts the scores so the
    demonstrations average 0 (the RM stage sets it), as ``helpers.reward.score`` does.
    """
    offset = float(getattr(reward_model.config, "reward_offset", 0.0) or 0.0)
    return pooled_scores(reward_model, input_ids, attention_mask).float() - offset


@dataclass
class PackedBatch:
    """The sequences of a padded batch laid end to end, several to a row (``pack_sequences``)."""

    input_ids: torch.Tensor  # (rows, width) sequence after sequence, pad tokens at the end of a row
    position_ids: torch.Tensor  # (rows, width) 0, 1, 2, ... restarting with every sequence
    source: torch.Tensor  # (n,) flat position (row * width + column) of the output predicting each
    #                       real response token of the batch
    target: tuple  # (batch row, response column) of each of those n tokens in the (B, R) layout
    tokens: torch.Tensor  # (n,) the response tokens themselves
    shape: tuple  # (B, R), the layout of the rollout's per-token tensors


def pack_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> PackedBatch:
    """Pack the real tokens of a ``[prompt | response]`` batch into fewer, fuller rows.

    Why: a padded batch is as wide as its longest prompt plus its longest response, and the
    responses vary (about 11 tokens, the longest of a batch about 25, in the tiny profile), so
    about half of what a padded forward and backward pass computes is padding. Packed, the
    models compute little besides real tokens.

    Each row holds whole sequences one after another (first-fit, longest first, into rows twice
    as wide as the longest sequence); the position ids restart at 0 with every sequence. Given
    position ids and no attention mask, transformers' attention lets a token see only the
    earlier tokens of its own sequence (it reads the sequence boundaries from the position ids:
    a packed batch). Every token thus gets the output it would get in the padded batch, up to
    float rounding (``test_packed_sequences_give_the_losses_and_gradients_of_a_padded_batch``).
    """
    batch, total_width = attention_mask.shape
    lengths = attention_mask.sum(1).tolist()
    width = 2 * max(lengths)
    row_of, start_of, room = {}, {}, []  # room: free columns left in each packed row
    for i in sorted(range(batch), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            row = len(room)
            room.append(width)
        row_of[i], start_of[i] = row, width - room[row]
        room[row] -= lengths[i]

    device = input_ids.device
    ids = torch.zeros((len(room), width), dtype=input_ids.dtype, device=device)  # unused columns: any token
    positions = torch.zeros_like(ids)
    source, rows, columns = [], [], []
    for i in range(batch):
        real_columns = attention_mask[i].nonzero().squeeze(1)
        n, row, start = len(real_columns), row_of[i], start_of[i]
        ids[row, start:start + n] = input_ids[i, real_columns]
        positions[row, start:start + n] = torch.arange(n, device=device)
        # The k-th real token of the sequence is predicted by the output at packed column
        # start + k - 1; the response's tokens are those in columns >= prompt_length.
        k = torch.arange(n, device=device)
        response = real_columns >= prompt_length
        source.append(row * width + start + k[response] - 1)
        rows.append(torch.full_like(k[response], i))
        columns.append(real_columns[response] - prompt_length)
    rows, columns = torch.cat(rows), torch.cat(columns)
    return PackedBatch(input_ids=ids, position_ids=positions, source=torch.cat(source), target=(rows, columns),
                       tokens=input_ids[rows, columns + prompt_length],
                       shape=(batch, total_width - prompt_length))


def _packed_hidden(model, packed: PackedBatch) -> torch.Tensor:
    """The transformer's last hidden state at every packed source position: (n, width)."""
    # No attention mask: transformers then finds the packed sequences from the position ids.
    hidden = model.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                              use_cache=False).last_hidden_state
    return hidden.flatten(0, 1)[packed.source]


def _unpack(values: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
    """(n,) numbers of the real response tokens -> (B, R), 0 on padding."""
    return values.new_zeros(packed.shape).index_put(packed.target, values)


def packed_response_logprobs(model, packed: PackedBatch, temperature: float = 1.0, with_entropy: bool = False):
    """``response_logprobs`` on a packed batch: the same (B, R) numbers, 0 on padding."""
    logits = model.get_output_embeddings()(_packed_hidden(model, packed)).float() / temperature
    all_logprobs = F.log_softmax(logits, dim=-1)
    logprobs = _unpack(all_logprobs.gather(-1, packed.tokens[:, None]).squeeze(-1), packed)
    if not with_entropy:
        return logprobs
    return logprobs, _unpack(-(all_logprobs.exp() * all_logprobs).sum(-1), packed)


def packed_response_values(value_model, packed: PackedBatch) -> torch.Tensor:
    """``response_values`` on a packed batch: the same (B, R) numbers, 0 on padding."""
    return _unpack(value_model.score(_packed_hidden(value_model, packed)).squeeze(-1).float(), packed)


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
    from helpers.pretrain import next_token_loss

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
    from helpers.generation import generate

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
    from helpers.labelers import gold_score

    return [gold_score(e, r) for e, r in zip(examples, responses)]


@torch.no_grad()
def evaluate_rollout(rollout: Rollout, policy, reference, value_model, config: PPOConfig) -> Rollout:
    """Fill in the rollout's log-probs (policy and reference), entropy and values.

    All three with the models in eval mode and at the sampling temperature, on exactly the
    sampled tokens. These are the "old" numbers PPO's ratio and value clipping compare against.
    """
    for model in (policy, reference, value_model):
        model.eval()  # dropout off (it does not stop gradients; see the module docstring)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
    if config.pack_sequences:  # the same numbers, computed without padding (only for speed)
        packed = pack_sequences(*args)
        rollout.logprobs, rollout.entropy = packed_response_logprobs(policy, packed, config.temperature,
                                                                     with_entropy=True)
        # The reference at the same temperature: the KL is between the two sampling distributions.
        rollout.ref_logprobs = packed_response_logprobs(reference, packed, config.temperature)
        rollout.values = packed_response_values(value_model, packed)
    else:
        rollout.logprobs, rollout.entropy = response_logprobs(policy, *args, config.temperature, with_entropy=True)
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
                ptx = (policy(input_ids=block, attention_mask=block_mask, use_cache=False).logits, block, block_mask)
            loss = ppo_ptx_loss(policy_loss, value_loss, *ptx, config.vf_coef, config.ptx_coef)
            if config.ptx_coef > 0:  # the pretraining loss is what the total adds to PPO's two terms
                ptx_term = loss.detach() - (policy_loss.detach() + config.vf_coef * value_loss.detach())
                add("ptx_loss", ptx_term.item() / config.ptx_coef)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), config.max_grad_norm)
            optimizer.step()

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


def pretraining_batches(tokenizer, texts: Sequence[str], batch_size: int = 8, seq_len: int = 128,
                        seed: int = 0) -> Iterator[torch.Tensor]:
    """Endless (batch_size, seq_len) blocks of packed pretraining text, for PPO-ptx."""
    from helpers.pretrain import pack_corpus

    blocks = pack_corpus(tokenizer, list(texts), seq_len)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(blocks.size(0), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield blocks[order[start:start + batch_size]]


def train_ppo(policy, reference, value_model, reward_model, tokenizer, prompts: list, config: PPOConfig,
              callback: Callable[[int, dict], None] | None = None, progress: bool = True, *,
              reward_fn: Callable | None = None, gold_fn: Callable | None = None,
              ptx_batches: Iterator | None = None) -> dict:
    """Train ``policy`` and ``value_model`` in place with PPO; return the history (dict of lists).

    policy: causal LM to train (start: a copy of the SFT model); reference: the frozen SFT
    model; value_model: a sequence classifier with one label (start: a copy of the reward
    model, see ``value_model_from``); reward_model: the frozen RM, or None with
    ``reward_fn(examples, responses) -> list[float]`` instead. prompts: world ``Example``s.
    gold_fn(example, response) -> float: if given, the gold score of every rollout response is
    logged (free: the responses exist anyway). ptx_batches: an iterator of token blocks
    (``pretraining_batches``), needed when ``config.ptx_coef > 0``.

    callback(iteration, stats) runs after every iteration (stats: this iteration's numbers and
    a few samples), e.g. to redraw a live dashboard.
    """
    from helpers.progress import tqdm

    config.validate()
    if config.ptx_coef > 0 and ptx_batches is None:
        raise ValueError("ptx_coef > 0 needs ptx_batches (see pretraining_batches)")
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
            stats["gold"] = sum(gold_fn(e, r) for e, r in zip(rollout.examples, rollout.responses)) / len(examples)
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


def value_model_from_causal_lm(model):
    """A value model built from a causal LM's body with a fresh scalar head (no RM available)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_labels = 1
    value_model = AutoModelForSequenceClassification.from_config(config)
    value_model.base_model.load_state_dict(model.base_model.state_dict())
    with torch.no_grad():
        value_model.score.weight.zero_()  # values start at 0 rather than at random numbers
    return value_model.to(next(model.parameters()).device).eval()


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
# The "ppo" and "ppo_ptx" stages: load_or_train("ppo")
# --------------------------------------------------------------------------------------------

#: PPO-ptx's pretraining-loss weight in the tiny profile. InstructGPT's gamma = 27.8 goes with
#: its own loss scaling; here both losses are per-token means, and 1.0 makes the pretraining
#: loss pull about as hard as the policy loss.
PTX_COEF = 1.0
#: The paper's alternative to ptx: a larger KL coefficient instead of the pretraining loss.
HIGH_BETA = 0.5


def ppo_stage_settings(run) -> dict:
    """Settings of the "ppo" stage for a profile and fast mode: PPOConfig's fields and the prompts."""
    if run.fast:
        config = PPOConfig.fast()
    elif run.profile == "gpu":
        # a 135M pretrained model: smaller steps, longer answers, more episodes
        config = PPOConfig(total_episodes=8192, max_new_tokens=64, learning_rate=1e-6,
                           value_learning_rate=1e-5)
    else:
        config = PPOConfig()
    config.seed = run.seed
    return {**asdict(config), "prompt_seed": run.seed, "n_prompts": 64 if run.fast else None,
            "ptx_seq_len": 64 if run.fast else 128, "ptx_docs": 300 if run.fast else None}


def ppo_ptx_stage_settings(run) -> dict:
    """Settings of the "ppo_ptx" stage: the "ppo" settings plus the pretraining loss."""
    return {**ppo_stage_settings(run), "ptx_coef": PTX_COEF}


def ppo_high_beta_stage_settings(run) -> dict:
    """Settings of the "ppo_high_beta" stage: the "ppo" settings with beta = HIGH_BETA."""
    return {**ppo_stage_settings(run), "kl_coef": HIGH_BETA}


def config_and_prompts(settings: dict) -> tuple[PPOConfig, list]:
    """The PPOConfig and the training prompts of a stage's settings (``ppo_stage_settings``)."""
    from helpers import world

    config = PPOConfig(**{k: settings[k] for k in PPOConfig.__dataclass_fields__})
    return config, world.prompts("ppo", seed=settings["prompt_seed"], n=settings["n_prompts"])


def train_ppo_stage(config: dict, inputs: dict, out_dir: Path) -> dict:
    """Train PPO from the "sft" and "rm" artifacts into ``out_dir``; return metrics.

    The policy starts as a copy of the SFT model, which also stays frozen as the reference; the
    value model starts as a copy of the RM. The policy and its tokenizer are saved with
    ``save_pretrained`` (the value model is not needed after training), the curves as
    history.json.
    """
    from helpers import labelers, world

    models = prepare_models(inputs["sft"], inputs["rm"])
    policy, tokenizer = models.policy, models.tokenizer
    ppo_config, prompts = config_and_prompts(config)
    ptx_batches = None
    if ppo_config.ptx_coef > 0:
        texts = world.pretraining_corpus(seed=config["prompt_seed"], n_docs=config["ptx_docs"])
        ptx_batches = pretraining_batches(tokenizer, texts, ppo_config.ptx_batch_size,
                                          config["ptx_seq_len"], seed=ppo_config.seed)
    history = train_ppo(policy, models.reference, models.value_model, models.reward_model, tokenizer, prompts,
                        ppo_config, progress=True, gold_fn=labelers.gold_score, ptx_batches=ptx_batches)
    return save_policy(policy, tokenizer, history, out_dir)


def save_policy(policy, tokenizer, history: dict, out_dir: Path) -> dict:
    """Save a trained policy, its tokenizer and its curves (history.json) into ``out_dir``, as
    the PPO stages keep them; return the stage's metrics (from ``history``)."""
    import json

    from helpers.models import quiet_loading

    with quiet_loading():
        policy.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "history.json").write_text(json.dumps(history))
    last = max(1, len(history["score"]) // 10)  # the last tenth of the run

    def tail(name: str) -> float:
        return sum(history[name][-last:]) / last

    return {"score_start": history["score"][0], "score_end": tail("score"),
            "gold_start": history["gold"][0], "gold_end": tail("gold"),
            "kl_end": tail("kl"), "response_length_end": tail("response_length"),
            "episodes": history["episodes"][-1],
            "seconds": round(sum(sum(v) for k, v in history.items() if k.startswith("time_")), 1)}


def keep_as_stage(policy, tokenizer, history: dict, config: PPOConfig, run) -> bool:
    """Keep a policy trained with ``train_ppo`` in a notebook as the "ppo" artifact, so that
    ``load_or_train("ppo")`` (notebook 06) loads it instead of training the same run again.
    Only a run with the "ppo" stage's settings for ``run`` (a ``config.Settings``) is kept."""
    from dataclasses import asdict

    from helpers import stages

    settings = {**ppo_stage_settings(run), **asdict(config)}
    return stages.keep_trained("ppo", lambda folder: save_policy(policy, tokenizer, history, folder), settings)


def load_ppo_stage(path: Path, info: dict):
    """The trained policy and its tokenizer."""
    from helpers.stages import load_lm_artifact

    return load_lm_artifact(path, info)


def ppo_estimate(config: dict, run) -> str:
    if run.fast:
        return "a few seconds, fast mode"
    from helpers import speed

    return f"{config['total_episodes']} episodes, " + (
        speed.estimate("ppo_ptx_episode" if config["ptx_coef"] > 0 else "ppo_episode",
                       config["total_episodes"]) or "minutes on a GPU")


def _register() -> None:
    from helpers.stages import register_stage

    register_stage("ppo", ppo_stage_settings, train_ppo_stage, load_ppo_stage, requires=("sft", "rm"),
                   version="1", estimate_fn=ppo_estimate)
    register_stage("ppo_ptx", ppo_ptx_stage_settings, train_ppo_stage, load_ppo_stage,
                   requires=("sft", "rm"), version="1", estimate_fn=ppo_estimate)
    register_stage("ppo_high_beta", ppo_high_beta_stage_settings, train_ppo_stage, load_ppo_stage,
                   requires=("sft", "rm"), version="1", estimate_fn=ppo_estimate)


_register()


__all__ = [
    "PPOConfig", "masked_mean", "masked_var", "masked_whiten", "last_real_index", "response_logprobs",
    "PackedBatch", "pack_sequences", "packed_response_logprobs", "packed_response_values",
    "token_values", "response_values", "sequence_scores", "per_token_kl", "token_rewards", "gae",
    "clipped_policy_loss", "clipped_value_loss", "ppo_ptx_loss", "explained_variance", "AdaptiveKLController",
    "FixedKLController", "Rollout", "sample_responses", "Scorer", "gold_reward", "evaluate_rollout", "make_optimizer",
    "ppo_update", "pretraining_batches", "train_ppo", "value_model_from", "value_model_from_causal_lm",
    "PPOModels", "prepare_models", "config_and_prompts", "PTX_COEF", "HIGH_BETA", "ppo_stage_settings",
    "ppo_ptx_stage_settings", "ppo_high_beta_stage_settings", "train_ppo_stage", "load_ppo_stage", "ppo_estimate",
]
