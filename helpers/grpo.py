"""Group-relative policy optimization (GRPO, Shao et al. 2024) and its baseline, RLOO.

PPO needs a value model to tell a good answer from a lucky one: the advantage of an answer is
its reward minus what the value model expected. GRPO drops the value model. It samples a group
of G answers to the same prompt and compares each one with its siblings:

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)

Every token of answer i gets the same advantage A_i (the reward judges the whole answer), and
the policy loss is PPO's clipped surrogate on those tokens. The KL to the reference (the SFT
model) is a term of the loss, beta * KL, estimated per token with k3 = (p_ref/p - 1) - log(p_ref/p),
instead of a penalty folded into the reward as in PPO.

RLOO (Ahmadian et al. 2024) keeps plain REINFORCE and gives each of K answers a baseline
made of the other K - 1: A_i = r_i - mean over j != i of r_j. Both need several answers per
prompt, which is what buys them out of the value model; both are in TRL.

``group_advantages`` and ``rloo_advantages`` below are the two formulas written out (the
exercise's); ``train_grpo`` trains through TRL's ``GRPOTrainer``, which samples the groups
with the policy itself (plain ``generate``, no vLLM), scores them with a reward function
(the course's reward model via ``rm_reward``, or the gold labeler via ``gold_reward``) and
takes the steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from helpers import labelers, reward, trainer_progress
from helpers.config import device
from helpers.models import load_causal_lm, quiet_loading
from helpers.sft import conversation, scratch_dir, trainer_defaults
from helpers.trainer_progress import TrainerProgress

# --------------------------------------------------------------------------------------------
# Advantages without a value model
# --------------------------------------------------------------------------------------------

#: Added to the group's standard deviation before dividing (TRL's value): keeps a group whose
#: rewards are all equal, or nearly, from dividing by zero.
STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """GRPO's advantage of every answer: its reward relative to the other answers to its prompt.

    rewards: (n_prompts * group_size,), the G answers of one prompt next to each other (answer j
    of prompt i at i * G + j). Within each group,

        A_i = (r_i - mean(r)) / (std(r) + eps)     with scale=True (GRPO)
        A_i =  r_i - mean(r)                       with scale=False (Dr. GRPO: dividing by the
                                                   std weights the groups unequally, see below)

    std is the sample standard deviation (n - 1, as torch.std) and eps = ``STD_EPS``. The
    advantages of a group sum to 0: as many pushes up as down. A group whose G rewards are all
    equal (every answer right, or every answer wrong) gets advantage 0 for every answer: it
    says nothing about which answer is better, so it teaches nothing, and its tokens move only
    through the KL term. Dividing by the std makes a group that is nearly equal count as much as
    one with a wide spread, which is what scale=False avoids.
    """
    if group_size < 2:
        raise ValueError("a group needs at least 2 answers to compare (group_size >= 2)")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (groups.std(dim=1, keepdim=True) + STD_EPS)
    return centered.view(-1)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO's advantage: each answer's reward minus the mean reward of the other K - 1 answers to
    the same prompt (leave one out). Layout as in ``group_advantages``.

        A_i = r_i - (sum_j r_j - r_i) / (K - 1)  =  K / (K - 1) * (r_i - mean(r))

    The baseline excludes the answer itself, so it does not depend on that answer's sampled
    tokens, and the policy gradient stays unbiased. No scaling by the spread.
    """
    if k < 2:
        raise ValueError("leave-one-out needs at least 2 answers per prompt (k >= 2)")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {k}")
    groups = rewards.float().view(-1, k)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - others).view(-1)


# --------------------------------------------------------------------------------------------
# Reward functions: (examples, responses) -> one number per response
# --------------------------------------------------------------------------------------------


def rm_reward(reward_model, tokenizer) -> Callable[[list, list[str]], list[float]]:
    """The learned reward model as a reward function (``reward.score``: demonstrations ~ 0)."""

    def score(examples: list, responses: list[str]) -> list[float]:
        return reward.score(reward_model, tokenizer, [e.prompt for e in examples], responses).tolist()

    return score


def gold_reward(examples: list, responses: list[str]) -> list[float]:
    """The gold labeler's score as the reward: GRPO against the "true" preferences."""
    return labelers.gold_scores(examples, responses)


# --------------------------------------------------------------------------------------------
# Training with TRL
# --------------------------------------------------------------------------------------------


@dataclass
class GRPOSettings:
    """What a GRPO run does. The defaults are the full-mode tiny-profile run."""

    total_prompts: int = 384  # prompts answered (each group_size times) over the run
    prompts_per_step: int = 8  # prompts per gradient step; each brings its group
    group_size: int = 8  # G: answers sampled per prompt (the GRPO paper: 64)
    # Weight of the KL term (k3 estimator) in the loss. TRL's default, 0, drops the reference
    # model altogether; the GRPO paper used 0.04. Kept, so the run stays near the SFT model
    # as PPO's does and the two can be compared at similar KL.
    beta: float = 0.04
    learning_rate: float = 3e-5
    temperature: float = 1.0
    max_new_tokens: int = 40
    clip_range: float = 0.2  # epsilon of the clipped ratio, as in PPO
    updates_per_batch: int = 1  # mu: passes over each batch of groups (1: the ratio stays 1)
    scale_rewards: bool = True  # divide by the group's std (GRPO); False: Dr. GRPO
    # How token losses add up: "grpo" (the paper's: mean over each answer's tokens, then over
    # answers; a short answer's tokens weigh more) or TRL's default "dapo" (mean over all tokens).
    loss_type: str = "grpo"
    seed: int = 0

    @property
    def steps(self) -> int:
        return max(1, self.total_prompts // self.prompts_per_step)


@dataclass
class GRPOHistory:
    """Curves of one GRPO run, one entry per gradient step."""

    step: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)  # mean reward of the step's answers
    reward_std: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)  # mean per-token KL to the reference (k3)
    response_length: list[float] = field(default_factory=list)  # tokens
    equal_reward_groups: list[float] = field(default_factory=list)  # share of groups with std 0
    gold: list[float] = field(default_factory=list)  # mean gold score of the answers (if gold_fn)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _prompt_dataset(examples: list):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": conversation(e.prompt), "example_index": i}
                              for i, e in enumerate(examples)])


def _trl_reward(examples: list, reward_fn: Callable, name: str) -> Callable:
    """A TRL reward function (keyword arguments; conversational completions) around ``reward_fn``,
    named ``name`` (TRL logs each reward function's mean under its name)."""

    def course_reward(prompts, completions, example_index, **kwargs) -> list[float]:
        # The chat template puts a space after "<|assistant|>"; the model writes it as part of
        # its answer, and the answer's text is what follows it (as helpers.generation returns it).
        texts = [c[0]["content"] for c in completions]
        texts = [t[1:] if t.startswith(" ") else t for t in texts]
        return [float(r) for r in reward_fn([examples[i] for i in example_index], texts)]

    course_reward.__name__ = name
    return course_reward


def train_grpo(sft_path, tokenizer, examples: list, reward_fn: Callable, settings: GRPOSettings,
               progress: bool = True, gold_fn: Callable | None = None):
    """Train a policy from the SFT model in ``sft_path`` with TRL's ``GRPOTrainer``: (model, history).

    examples: the prompts (world ``Example``s), cycled through in shuffled order.
    reward_fn(examples, responses) -> list[float] scores the answers (``rm_reward``,
    ``gold_reward``, or a toy one). Each step samples ``group_size`` answers to each of
    ``prompts_per_step`` prompts with the policy, scores them, turns the rewards into group
    advantages and takes one gradient step per pass (``updates_per_batch``). The reference for the
    KL term is the same SFT model, frozen (TRL loads it from the policy's folder).

    gold_fn(examples, responses) -> list[float]: if given, the gold score of every sampled answer
    is logged too (``history.gold``). It is a second reward function of weight 0: TRL scores and
    logs it, and it changes nothing in the advantages.
    """
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    history = GRPOHistory()
    batch = settings.prompts_per_step * settings.group_size
    config = GRPOConfig(
        output_dir=str(scratch_dir()),
        max_steps=settings.steps,
        per_device_train_batch_size=batch,  # answers per step: whole groups only
        num_generations=settings.group_size,
        max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature,
        beta=settings.beta,
        epsilon=settings.clip_range,
        num_iterations=settings.updates_per_batch,
        scale_rewards="group" if settings.scale_rewards else "none",
        loss_type=settings.loss_type,
        reward_weights=[1.0] if gold_fn is None else [1.0, 0.0],
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",  # a short run would spend its end barely moving
        max_grad_norm=1.0,
        logging_steps=1,
        use_vllm=False,  # generation with the policy's own generate(), on any device
        **trainer_defaults(settings.seed),
    )

    def record(state, logs) -> dict | None:
        if "reward" not in logs:
            return None
        history.step.append(state.global_step)
        history.reward.append(float(logs["reward"]))
        history.reward_std.append(float(logs.get("reward_std", math.nan)))
        history.kl.append(float(logs.get("kl", 0.0)))  # no KL term when beta = 0
        history.response_length.append(float(logs.get("completions/mean_length", math.nan)))
        history.equal_reward_groups.append(float(logs.get("frac_reward_zero_std", math.nan)))
        if gold_fn is not None:
            history.gold.append(float(logs.get("rewards/gold/mean", math.nan)))
        return dict(reward=f"{history.reward[-1]:.2f}", kl=f"{history.kl[-1]:.3f}")

    datasets.disable_progress_bars()  # the dataset preparation bars say nothing to a student
    started = time.perf_counter()
    policy = load_causal_lm(sft_path, device())
    reward_funcs = [_trl_reward(list(examples), reward_fn, "reward")]
    if gold_fn is not None:
        reward_funcs.append(_trl_reward(list(examples), gold_fn, "gold"))
    with quiet_loading():
        trainer = trainer_progress.quiet(GRPOTrainer(
            model=policy, reward_funcs=reward_funcs, args=config, train_dataset=_prompt_dataset(examples),
            processing_class=tokenizer, callbacks=[TrainerProgress("GRPO", record, progress)]))
    trainer.train()
    history.seconds = time.perf_counter() - started
    return trainer.model.to(device()).eval(), history
