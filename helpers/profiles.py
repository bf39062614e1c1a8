"""The two profiles, as data: what every stage of the pipeline does in each, and in fast mode.

* ``tiny`` trains its own small models from scratch on the Instruction World, offline, on any
  CPU. Its runs are sized for a 2-core laptop: the whole course in about half an hour.
* ``gpu`` starts from pretrained SmolLM2 models from the Hugging Face hub and needs a GPU.

Each table below sets, per stage, the settings that make the profile what it is (how long, how
big, how fast it learns). Everything else takes the defaults of the stage's settings class
(``PretrainConfig``, ``SFTSettings``, ``RMSettings``, ``PPOConfig``, ``DPOSettings``,
``GRPOSettings``), where each one is
explained. Fast mode (``COURSE_FAST=1``) is a smoke run of the same pipeline: it changes only
the sizes, listed in each profile's ``fast`` table, so a notebook runs top to bottom in seconds.

A stage reads its settings with ``stage_settings(profile, fast, stage)``; ``load_or_train``
overrides replace any of them for one call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: Responses sampled per prompt for labelers to rank. InstructGPT showed labelers between 4 and
#: 9; each ranking of K gives K(K-1)/2 comparison pairs.
K = 4

#: PPO-ptx's weight of the pretraining loss. InstructGPT's gamma = 27.8 goes with its own loss
#: scaling; here both losses are per-token means, and 1.0 makes the pretraining loss pull about as
#: hard as the policy loss.
PTX_COEF = 1.0

#: The paper's alternative to PPO-ptx: a larger KL coefficient instead of the pretraining loss.
HIGH_BETA = 0.5

#: Notebook 07 pushes PPO against the reward model harder than the course's PPO (beta 0.2): with
#: no KL penalty at all, and with Stiennon et al.'s beta 0.05 for twice the episodes.
LOW_BETA = 0.05


#: Everything the gpu profile takes from the Hugging Face hub: (the environment variable that
#: replaces it, the default). A replacement may be another hub id or a local folder in the same
#: layout (a model saved with ``save_pretrained``, a dataset's parquet files).
HUB = {
    "base": ("COURSE_HUB_BASE", "HuggingFaceTB/SmolLM2-135M"),
    "base_big": ("COURSE_HUB_BASE_BIG", "HuggingFaceTB/SmolLM2-360M"),
    # The gold labeler: a strong public reward model (Apache 2.0, 0.6B parameters, so it fits on a
    # 16 GB T4 beside the four models of a PPO run).
    "gold_rm": ("COURSE_HUB_GOLD_RM", "Skywork/Skywork-Reward-V2-Qwen3-0.6B"),
    # Human-written demonstrations in InstructGPT's categories; its prompts also serve the
    # rankings, PPO and the evaluation, in disjoint parts.
    "demonstrations": ("COURSE_HUB_DEMONSTRATIONS", "HuggingFaceH4/no_robots"),
    # Held-out text for the pretraining loss (and PPO-ptx's pretraining batches).
    "heldout_text": ("COURSE_HUB_HELDOUT_TEXT", "Salesforce/wikitext"),
}


def hub_id(name: str) -> str:
    """The hub id (or local folder) the gpu profile uses for ``name`` (a key of ``HUB``)."""
    variable, default = HUB[name]
    return os.environ.get(variable, "").strip() or default


@dataclass(frozen=True)
class HubId:
    """A setting whose value is ``hub_id(name)``, read when the settings are (so an environment
    override changes the settings, and a stage made with another model is rebuilt)."""

    name: str


@dataclass(frozen=True)
class Scaled:
    """A variant's setting that is its parent stage's value times ``factor`` (in fast mode too, so
    a variant with twice the episodes stays a smoke run there)."""

    factor: float

    def of(self, value):
        scaled = value * self.factor
        return max(1, round(scaled)) if isinstance(value, int) else scaled


@dataclass(frozen=True)
class Profile:
    """What every stage does in one profile: ``stages[stage]`` are its settings in full mode,
    ``fast[stage]`` what fast mode changes on top of them, ``variants[stage]`` a stage that is
    another stage's run with a few settings changed, as (that stage, the changes). ``data``: where
    the demonstrations, prompts and text come from, ``"world"`` (the Instruction World) or
    ``"hub"`` (hub datasets, ``HUB``)."""

    name: str
    stages: dict[str, dict]
    fast: dict[str, dict]
    variants: dict[str, tuple[str, dict]] = field(default_factory=dict)
    data: str = "world"


# Pretraining from scratch (tiny profile). Why 2400 steps: the ability to copy from the context,
# which most tasks need, appears late (``benchmarks/base_copying.py`` probes it). Why 16 blocks a
# step: more, smaller steps suit a small model better than fewer, larger ones in the same time.
_PRETRAIN = {"steps": 2400, "batch_size": 16, "seq_len": 128, "lr": 3e-3, "warmup": 40,
             "eval_every": 200, "n_docs": None, "heldout_docs": 500}

# The variants of the PPO stage that notebook 06 compares (both profiles), and the two that
# notebook 07 overoptimizes with.
_PPO_VARIANTS = {"ppo_ptx": ("ppo", {"ptx_coef": PTX_COEF}),
                 "ppo_high_beta": ("ppo", {"kl_coef": HIGH_BETA}),
                 "ppo_no_kl": ("ppo", {"kl_coef": 0.0}),
                 "ppo_low_beta_long": ("ppo", {"kl_coef": LOW_BETA, "total_episodes": Scaled(2)})}

# Notebook 06's second model size: SFT, PPO and PPO-ptx from the bigger base, with the small
# model's settings, except that the wider model's SFT takes half the step, as a wider model's
# pretraining does (``benchmarks/figure1.py`` compares the sizes).
_BIG_VARIANTS = {"sft_big": ("sft", {"learning_rate": Scaled(0.5)}), "ppo_big": ("ppo", {}),
                 "ppo_ptx_big": ("ppo", {"ptx_coef": PTX_COEF})}

# Notebook 07's second reward model: the same recipe on another number of comparisons. The rm
# variant changes nothing itself; its recipe reads the comparisons_scaled stage.
_RM_VARIANTS = {"rm_scaled": ("rm", {})}

# Notebook 08: DPO's beta swept around the course's 0.1 (the DPO paper's range is 0.1 to 0.5), and
# GRPO against the gold labeler itself, the ceiling of what a policy could learn from a perfect
# judge in the same budget.
DPO_BETA_LOW, DPO_BETA_HIGH = 0.03, 0.5
_BEYOND_PPO_VARIANTS = {"dpo_beta_low": ("dpo", {"beta": DPO_BETA_LOW}),
                        "dpo_beta_high": ("dpo", {"beta": DPO_BETA_HIGH}),
                        "grpo_gold": ("grpo", {"reward": "gold"})}

# Fast mode of the stages both profiles train the same way: a few dozen examples each.
_FAST_TRAINING = {
    "sft": {"epochs": 1, "n_demonstrations": 96, "batch_size": 16, "eval_prompts_per_epoch": 12},
    "comparisons": {"n_prompts": 24, "heldout_prompts": 12},
    "rm": {"prompts_per_batch": 4, "pairs_per_batch": 24, "offset_demonstrations": 40},
    "ppo": {"total_episodes": 16, "batch_size": 8, "minibatch_size": 4, "ppo_epochs": 2,
            "max_new_tokens": 16, "reward_norm_prompts": 8, "n_prompts": 64, "ptx_seq_len": 64,
            "ptx_docs": 300},
    # Notebook 08: DPO on the fast comparisons, GRPO for four steps of two groups of four.
    "dpo": {"n_rankings": 24, "batch_size": 16},
    "grpo": {"total_prompts": 8, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 16},
}

TINY = Profile(
    name="tiny",
    stages={
        "tokenizer": {"vocab_size": 2048, "model_max_length": 256, "n_docs": None},
        "base": {"size": "tiny", **_PRETRAIN},
        # The big model (5.4x the parameters) reads the same text as the small one; a wider model
        # wants a smaller step. It is several times slower per token, so the course ships its
        # weights (data/tiny/base_big/, see helpers/shipped_weights.py) and trains it only when
        # they do not fit the student's tokenizer.
        "base_big": {"size": "big", **_PRETRAIN, "lr": 2e-3},
        "sft": {"epochs": 6, "learning_rate": 2e-3, "batch_size": 32, "max_length": 128,
                "n_demonstrations": None, "eval_prompts_per_epoch": 120},
        "comparisons": {"n_prompts": 1500, "heldout_prompts": 300, "k": K, "temperature": 1.0,
                        "max_new_tokens": 48, "n_labelers": 6},
        "rm": {"epochs": 1, "learning_rate": 1e-3, "prompts_per_batch": 8, "pairs_per_batch": 48,
               "max_length": 160, "offset_demonstrations": 400},
        "ppo": {"total_episodes": 3072, "batch_size": 64, "minibatch_size": 16, "ppo_epochs": 4,
                "max_new_tokens": 40, "learning_rate": 3e-5, "value_learning_rate": 1e-4,
                "reward_norm_prompts": 128, "n_prompts": None, "ptx_seq_len": 128, "ptx_docs": None},
        # Notebook 08. DPO: one pass over every pair of the comparisons stage's rankings. GRPO:
        # about as many answers as PPO's run (3,072 episodes), in groups of 8.
        "dpo": {"beta": 0.1, "learning_rate": 5e-4, "epochs": 1, "batch_size": 32, "max_length": 160},
        "grpo": {"reward": "rm", "total_prompts": 384, "prompts_per_step": 8, "group_size": 8,
                 "max_new_tokens": 40, "learning_rate": 3e-5, "beta": 0.04},
    },
    fast={
        **_FAST_TRAINING,
        "tokenizer": {"n_docs": 2000},
        "base": {"steps": 12, "batch_size": 8, "seq_len": 64, "warmup": 2, "eval_every": 6,
                 "n_docs": 2000, "heldout_docs": 100},
        "base_big": {"steps": 12, "batch_size": 8, "seq_len": 64, "warmup": 2, "eval_every": 6,
                     "n_docs": 2000, "heldout_docs": 100},
    },
    # The Instruction World's rm split has prompts enough for twice the comparisons: a stronger
    # reward model.
    variants={**_PPO_VARIANTS, **_RM_VARIANTS, **_BIG_VARIANTS, "comparisons_scaled": ("comparisons", {"n_prompts": Scaled(2)}),
              **_BEYOND_PPO_VARIANTS},
)

GPU = Profile(
    name="gpu",
    data="hub",
    stages={
        "tokenizer": {"hub_model": HubId("base")},  # the base model's own, with the course's chat tokens
        # The held-out loss on web text the base models never trained on: what the alignment tax
        # of notebook 06 is measured against.
        "base": {"hub_model": HubId("base"), "heldout_docs": 500, "seq_len": 512},
        "base_big": {"hub_model": HubId("base_big"), "heldout_docs": 500, "seq_len": 512},
        # A pretrained 135M model learns the answer format in far fewer, smaller steps.
        "sft": {**TINY.stages["sft"], "epochs": 2, "learning_rate": 5e-5, "batch_size": 16,
                "max_length": 512, "eval_max_new_tokens": 256},
        # Real answers run longer; the labelers' noise is fitted to the gold reward model's scores
        # of the answers being ranked (its scale is not the rubric's).
        "comparisons": {**TINY.stages["comparisons"], "max_new_tokens": 96, "calibrate_noise": True,
                        "gold_rm": HubId("gold_rm")},
        "rm": {**TINY.stages["rm"], "learning_rate": 1e-5, "max_length": 512},
        # Smaller steps, longer answers and more episodes for a pretrained model.
        "ppo": {**TINY.stages["ppo"], "total_episodes": 8192, "max_new_tokens": 64,
                "learning_rate": 1e-6, "value_learning_rate": 1e-5},
        # Notebook 08: a pretrained model's learning rates, answers as long as PPO's, and pairs
        # as long as the reward model's.
        "dpo": {**TINY.stages["dpo"], "learning_rate": 1e-6, "batch_size": 16, "max_length": 512},
        "grpo": {**TINY.stages["grpo"], "learning_rate": 1e-6, "max_new_tokens": 64},
    },
    fast={**_FAST_TRAINING, "base": {"heldout_docs": 8}, "base_big": {"heldout_docs": 8}},
    # no_robots' share for rankings (a quarter of its 9,500 training conversations) holds fewer
    # prompts than twice the comparisons stage's 1,800 need: the second reward model learns from
    # half as many, a weaker one.
    variants={**_PPO_VARIANTS, **_RM_VARIANTS, **_BIG_VARIANTS, "comparisons_scaled": ("comparisons", {"n_prompts": Scaled(0.5)}),
              **_BEYOND_PPO_VARIANTS},
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (TINY, GPU)}


def stage_settings(profile: str, fast: bool, stage: str) -> dict:
    """The settings a profile gives ``stage`` (full mode, or fast mode on top), as a new dict.
    A stage no profile table names (one added by a notebook or a test) gets none."""
    table = PROFILES[profile]
    if stage in table.variants:
        parent, changes = table.variants[stage]
        settings = stage_settings(profile, fast, parent)
        return {**settings, **{key: value.of(settings[key]) if isinstance(value, Scaled) else value
                               for key, value in changes.items()}}
    settings = dict(table.stages.get(stage, {}))
    if fast:
        settings.update(table.fast.get(stage, {}))
    return {key: hub_id(value.name) if isinstance(value, HubId) else value for key, value in settings.items()}
