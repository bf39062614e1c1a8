"""The course's pipeline: every stage, in order, and how each one is made.

    tokenizer -> base -> sft -> comparisons -> rm -> ppo, ppo_ptx, ppo_high_beta, ppo_no_kl, ppo_low_beta_long
                                                  -> grpo (notebook 08: GRPO against the reward model)
                                            -> dpo, dpo_beta_low, dpo_beta_high (notebook 08: DPO on the rankings)
                             -> grpo_gold (notebook 08: GRPO against the gold labeler, no reward model)
                             -> comparisons_scaled -> rm_scaled (notebook 07's second reward model)
              -> base_big -> sft_big -> ppo_big, ppo_ptx_big (notebook 06's bigger model size;
                                          their PPO uses the small reward model "rm")

A notebook asks for a stage with ``load_or_train("sft")``: the artifact cache
(``helpers.stages``) gives the one it holds if it was made with the current settings, and
otherwise trains it, and whatever it needs first, with the settings of the profile
(``helpers.profiles``). So every notebook runs on its own, even when the ones before it never
ran.

Each stage below is a short recipe: its settings (from the profile's table), a function that
trains it by calling its algorithm module (``pretrain``, ``sft``, ``comparisons``, ``reward``,
``ppo``, ``dpo``, ``grpo``) and saves the result into a folder, a function that loads that folder, and an estimate
of how long training takes. The algorithm modules know nothing of the cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import (comparisons, course_data, hub, labelers, ppo, profiles, reward, sft, shipped_weights, speed,
                     stages, world)
from helpers import dpo, footprint, grpo
from helpers import tokenizer as tk
from helpers.config import Settings, device, settings as current_settings
from helpers.models import (build_causal_lm, count_parameters, describe_size, load_causal_lm, load_reward_model,
                            quiet_loading)
from helpers.pretrain import PretrainConfig, heldout_loss, pretrain, pretraining_batches
from helpers.stages import Artifact, Stage

FAST_ESTIMATE = "a few seconds, fast mode"
#: What a stage's message says when this machine has no estimate (a GPU, or the gpu profile).
UNKNOWN_TIME = "minutes (python benchmarks/gpu_smoke.py predicts them on a GPU)"

# --------------------------------------------------------------------------------------------
# Shared by the recipes
# --------------------------------------------------------------------------------------------


def _table(run: Settings, stage: str) -> dict:
    return profiles.stage_settings(run.profile, run.fast, stage)


def _data(config: dict):
    """Where a stage's demonstrations, prompts and text come from: the Instruction World (tiny) or
    hub datasets (gpu), by the profile its settings were made for (the current one if unsaid)."""
    return course_data.source(config.get("profile"))


def _filled(settings_class, table: dict, seed: int) -> dict:
    """Every field of ``settings_class``: the table's value where it has one, else the class
    default, and the run's seed."""
    names = {f.name for f in fields(settings_class)}
    return asdict(settings_class(**{k: v for k, v in table.items() if k in names and k != "seed"}, seed=seed))


def _of(settings_class, config: dict):
    """The ``settings_class`` instance a stage's settings dict holds."""
    return settings_class(**{f.name: config[f.name] for f in fields(settings_class)})


def save_model(out_dir: Path, model, tokenizer, history: dict | None = None) -> None:
    """A model artifact: the model and its tokenizer (``save_pretrained``, so the folder is a
    complete model that ``from_pretrained(path)`` loads), and its training curves, if any."""
    with quiet_loading():
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if history is not None:
        (out_dir / stages.HISTORY_FILE).write_text(json.dumps(history))


def load_lm(path: Path, info: dict):
    """A causal-LM artifact (base, sft, ppo...): the model in eval mode and its tokenizer."""
    model = load_causal_lm(path, device())
    model.eval()
    return model, tk.load_tokenizer(path)


def _minutes(unit: str, count: int, what: str, run: Settings) -> str:
    return f"{what}, " + (speed.estimate(unit, count, run.profile) or UNKNOWN_TIME)


# --------------------------------------------------------------------------------------------
# tokenizer: trained on the world's text (tiny), or the hub model's (gpu)
# --------------------------------------------------------------------------------------------


def _tokenizer_settings(run: Settings) -> dict:
    table = _table(run, "tokenizer")
    return table if "hub_model" in table else {**table, "corpus_seed": run.seed}


def _train_tokenizer(config: dict, inputs: dict, out_dir: Path) -> dict:
    if "hub_model" in config:
        tok = hub.from_hub(AutoTokenizer.from_pretrained, config["hub_model"])
        added = tk.add_course_tokens(tok)
        tok.save_pretrained(out_dir)
        return {"vocab_size": len(tok), "tokens_added": added}
    texts = world.pretraining_corpus(seed=config["corpus_seed"], n_docs=config["n_docs"])
    # The tokenizer learns from all the text the course's models will read: the web, and the
    # demonstrations' answers, whose opening words ("Sure", "Sorry") the web rarely starts a
    # line with. Without them, an answer's first word is spelled letter by letter.
    demos = world.demonstrations(seed=config["corpus_seed"])
    texts = texts + [f"{d.prompt}\n{d.response}" for d in demos]
    tok = tk.train_tokenizer(texts, vocab_size=config["vocab_size"],
                             model_max_length=config["model_max_length"])
    tok.save_pretrained(out_dir)
    return {"vocab_size": len(tok), "documents": len(texts)}


def _load_tokenizer(path: Path, info: dict):
    return None, tk.load_tokenizer(path)


def _tokenizer_estimate(config: dict, run: Settings) -> str:
    return f"downloading {config['hub_model']}'s tokenizer" if "hub_model" in config else "a few seconds"


# --------------------------------------------------------------------------------------------
# base, base_big: pretraining from scratch (tiny), or a hub model (gpu)
# --------------------------------------------------------------------------------------------


def _base_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        table = _table(run, stage)
        if "hub_model" in table:
            return {**table, "corpus_seed": run.seed}
        # Flat, so that one setting can be overridden: load_or_train("base", steps=600).
        return {**table, **_filled(PretrainConfig, table, run.seed), "shape": describe_size(table["size"]),
                "corpus_seed": run.seed}

    return settings_fn


def _train_base_of(stage: str) -> Callable[[dict, dict, Path], dict]:
    """The recipe of a base stage: the hub model (gpu), the weights the course ships for it when
    they fit (tiny's base_big, ``helpers.shipped_weights``), else pretraining from scratch."""

    def train_fn(config: dict, inputs: dict, out_dir: Path) -> dict:
        if "hub_model" not in config:
            shipped, why_not = shipped_weights.find(stage, config, inputs["tokenizer"].tokenizer)
            if shipped is not None:
                return _load_shipped(shipped, config, inputs, out_dir)
            if shipped_weights.folder(stage, config["profile"]).exists():
                print(f"not using the shipped weights: {why_not}; pretraining instead")
        return _train_base(config, inputs, out_dir)

    return train_fn


def _load_shipped(shipped: Path, config: dict, inputs: dict, out_dir: Path) -> dict:
    tok = inputs["tokenizer"].tokenizer
    print(f"loading the pretrained weights the course ships ({shipped})")
    model, manifest = shipped_weights.load(shipped, device())
    history_file = shipped / stages.HISTORY_FILE
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() else None
    save_model(out_dir, model, tok, history)
    heldout = _data(config).heldout_corpus(seed=config["corpus_seed"], n_docs=config["heldout_docs"])
    # Measured again on the weights as shipped (half precision), not copied from the manifest.
    return {**manifest["metrics"], "shipped": True,
            "heldout_loss": heldout_loss(model, tok, heldout, seq_len=config["seq_len"], batch_size=16)}


def _train_base(config: dict, inputs: dict, out_dir: Path) -> dict:
    tok = inputs["tokenizer"].tokenizer
    if "hub_model" in config:
        # float32 whatever the checkpoint's dtype: every later stage fine-tunes these weights
        # (helpers.precision says why bfloat16 weights would not learn).
        model = hub.from_hub(AutoModelForCausalLM.from_pretrained, config["hub_model"], dtype=torch.float32)
        if model.get_input_embeddings().num_embeddings < len(tok):
            model.resize_token_embeddings(len(tok))  # room for the pad and chat tokens
        model.config.pad_token_id = tok.pad_token_id
        model.config.eos_token_id = tok.eos_token_id
        model.to(device())
        heldout = _data(config).heldout_corpus(seed=config["corpus_seed"], n_docs=config["heldout_docs"])
        save_model(out_dir, model, tok)
        return {"parameters": count_parameters(model),
                "heldout_loss": heldout_loss(model, tok, heldout, seq_len=config["seq_len"], batch_size=8)}
    texts = world.pretraining_corpus(seed=config["corpus_seed"], n_docs=config["n_docs"])
    heldout = world.heldout_corpus(seed=config["corpus_seed"], n_docs=config["heldout_docs"])
    model = build_causal_lm(tok, config["size"]).to(device())
    history = pretrain(model, tok, texts, _of(PretrainConfig, config), progress=True, heldout_texts=heldout)
    save_model(out_dir, model, tok, history)
    last = history["train_loss"][-20:]
    return {
        "parameters": count_parameters(model),
        "train_loss": sum(last) / len(last),
        "heldout_loss": history["heldout_loss"][-1],
        "tokens_per_second": round(history["tokens_per_second"]),
        "tokens_seen": history["tokens_seen"],
        "seconds": round(history["seconds"], 1),
    }


def _base_estimate_of(stage: str) -> Callable[[dict, Settings], str]:
    def estimate_fn(config: dict, run: Settings) -> str:
        if "hub_model" in config:
            return f"downloading {config['hub_model']} from the hub"
        if run.fast:
            return FAST_ESTIMATE
        if shipped_weights.folder(stage, run.profile).exists():
            return "seconds with the weights the course ships; pretraining otherwise"
        tokens = config["steps"] * config["batch_size"] * config["seq_len"]
        return speed.describe_minutes(speed.training_minutes(tokens, config["size"]))

    return estimate_fn


# --------------------------------------------------------------------------------------------
# sft: the base model fine-tuned on demonstrations
# --------------------------------------------------------------------------------------------


def _sft_settings_of(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        return {**_filled(sft.SFTSettings, _table(run, stage), run.seed), "demonstrations_seed": run.seed}

    return settings_fn


def _train_sft_from(base_stage: str) -> Callable[[dict, dict, Path], dict]:
    """SFT's recipe, from the base model of ``base_stage`` (a stage it requires)."""

    def train_fn(config: dict, inputs: dict, out_dir: Path) -> dict:
        return _train_sft(inputs[base_stage], config, out_dir)

    return train_fn


def _train_sft(base: Artifact, config: dict, out_dir: Path) -> dict:
    model = load_causal_lm(base.path, device())
    demos = _data(config).demonstrations(seed=config["demonstrations_seed"])
    history = sft.train_sft(model, base.tokenizer, demos, _of(sft.SFTSettings, config))
    save_model(out_dir, model, base.tokenizer, history.as_dict())
    return {"val_loss": history.val_loss[-1] if history.val_loss else None,
            "gold_score": history.gold_score[-1] if history.gold_score else None,
            "seconds": round(history.seconds, 1)}


def _sft_estimate_of(unit: str) -> Callable[[dict, Settings], str]:
    """``unit``: the speed reference of one epoch at this model size (``speed.REFERENCE_SECONDS``)."""

    def estimate_fn(config: dict, run: Settings) -> str:
        return FAST_ESTIMATE if run.fast else _minutes(unit, config["epochs"], f"{config['epochs']} epochs", run)

    return estimate_fn


# --------------------------------------------------------------------------------------------
# comparisons: K answers of the SFT model per prompt, ranked by the simulated labelers
# --------------------------------------------------------------------------------------------


def _comparisons_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        return {**_table(run, stage), "seed": run.seed}

    return settings_fn


def _train_comparisons(config: dict, inputs: dict, out_dir: Path) -> dict:
    examples = _data(config).prompts("rm", seed=config["seed"], n=config["n_prompts"] + config["heldout_prompts"])
    return comparisons.collect(inputs["sft"].model, inputs["sft"].tokenizer, examples, config, out_dir)


def _no_model(path: Path, info: dict):
    return None, None  # the rankings are read with comparisons.load_comparisons(artifact)


def _comparisons_estimate(config: dict, run: Settings) -> str:
    if run.fast:
        return FAST_ESTIMATE
    prompts = config["n_prompts"] + config["heldout_prompts"]
    return _minutes("comparisons_prompt", prompts, f"sampling {config['k']} answers to {prompts} prompts", run)


# --------------------------------------------------------------------------------------------
# rm: the reward model, from the SFT model and the comparisons
# --------------------------------------------------------------------------------------------


def _rm_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        table = _table(run, stage)
        return {**_filled(reward.RMSettings, table, run.seed), "offset_demonstrations": table["offset_demonstrations"]}

    return settings_fn


def _train_rm_on(comparisons_stage: str) -> Callable[[dict, dict, Path], dict]:
    """The reward model's recipe, on the rankings of ``comparisons_stage`` (a stage it requires)."""

    def train_fn(config: dict, inputs: dict, out_dir: Path) -> dict:
        sft_artifact, tokenizer = inputs["sft"], inputs["sft"].tokenizer
        train, held = comparisons.load_comparisons(inputs[comparisons_stage])
        model, metrics, history = reward.train_reward_stage(train, held, sft_artifact.path, tokenizer,
                                                            _of(reward.RMSettings, config))
        demos = _data(config).demonstrations(seed=config["seed"])[: config["offset_demonstrations"]]
        metrics["demonstration_offset"] = reward.set_demonstration_offset(
            model, tokenizer, [d.prompt for d in demos], [d.response for d in demos])
        save_model(out_dir, model, tokenizer, history.as_dict())
        return metrics

    return train_fn


def _load_rm(path: Path, info: dict):
    model = load_reward_model(path, device())
    model.eval()
    return model, tk.load_tokenizer(path)


def _rm_estimate(config: dict, run: Settings) -> str:
    if run.fast:
        return FAST_ESTIMATE
    epochs = config["epochs"]
    return _minutes("rm_epoch", epochs, f"{epochs} epoch{'s' * (epochs > 1)}", run)


# --------------------------------------------------------------------------------------------
# ppo, ppo_ptx, ppo_high_beta, ppo_no_kl, ppo_low_beta_long: the policy trained against the
# reward model
# --------------------------------------------------------------------------------------------


def _ppo_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        table = _table(run, stage)
        return {**table, **_filled(ppo.PPOConfig, table, run.seed), "prompt_seed": run.seed}

    return settings_fn


def ppo_config_and_prompts(config: dict) -> tuple[ppo.PPOConfig, list]:
    """The PPOConfig and the training prompts of a PPO stage's settings (``settings("ppo")``)."""
    prompts = _data(config).prompts("ppo", seed=config["prompt_seed"], n=config["n_prompts"])
    return _of(ppo.PPOConfig, config), prompts


def _ppo_metrics(history: dict) -> dict:
    last = max(1, len(history["score"]) // 10)  # the last tenth of the run

    def tail(name: str) -> float:
        return sum(history[name][-last:]) / last

    return {"score_start": history["score"][0], "score_end": tail("score"),
            "gold_start": history["gold"][0], "gold_end": tail("gold"),
            "kl_end": tail("kl"), "response_length_end": tail("response_length"),
            "episodes": history["episodes"][-1],
            "seconds": round(sum(sum(v) for k, v in history.items() if k.startswith("time_")), 1)}


def _train_ppo_from(sft_stage: str) -> Callable[[dict, dict, Path], dict]:
    """PPO's recipe, from the SFT model of ``sft_stage`` (a stage it requires, with "rm")."""

    def train_fn(config: dict, inputs: dict, out_dir: Path) -> dict:
        return _train_ppo(inputs[sft_stage], inputs["rm"], config, out_dir)

    return train_fn


def _train_ppo(sft_model: Artifact, rm: Artifact, config: dict, out_dir: Path) -> dict:
    """The policy starts as a copy of the SFT model, which also stays frozen as the reference;
    the value model starts as a copy of the RM and is not kept after training."""
    models = ppo.prepare_models(sft_model, rm)
    ppo_config, prompts = ppo_config_and_prompts(config)
    ptx_batches = None
    if ppo_config.ptx_coef > 0:
        texts = _data(config).pretraining_corpus(seed=config["prompt_seed"], n_docs=config["ptx_docs"])
        ptx_batches = pretraining_batches(models.tokenizer, texts, ppo_config.ptx_batch_size,
                                          config["ptx_seq_len"], seed=ppo_config.seed)
    history = ppo.train_ppo(models, prompts, ppo_config, progress=True, gold_fn=labelers.gold_scores,
                            ptx_batches=ptx_batches)
    save_model(out_dir, models.policy, models.tokenizer, history)
    return _ppo_metrics(history)


def _ppo_estimate_of(size: str = "") -> Callable[[dict, Settings], str]:
    """``size``: "" for the small policy, "_big" for the bigger one (its own speed references)."""

    def estimate_fn(config: dict, run: Settings) -> str:
        if run.fast:
            return FAST_ESTIMATE
        unit = f"ppo{'_ptx' if config['ptx_coef'] > 0 else ''}{size}_episode"
        return _minutes(unit, config["total_episodes"], f"{config['total_episodes']} episodes", run)

    return estimate_fn


# --------------------------------------------------------------------------------------------
# dpo, dpo_beta_low, dpo_beta_high: the policy trained on the comparisons directly (no reward
# model); grpo, grpo_gold: the policy trained by GRPO against the reward model, or the gold labeler
# --------------------------------------------------------------------------------------------


def _dpo_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        return _filled(dpo.DPOSettings, _table(run, stage), run.seed)

    return settings_fn


def _train_dpo(config: dict, inputs: dict, out_dir: Path) -> dict:
    """From the SFT model, on the very rankings the reward model learned from (all their pairs),
    with the SFT model as the frozen reference. Time and memory are measured around training."""
    train, held = comparisons.load_comparisons(inputs["comparisons"])
    with footprint.Footprint() as run:
        model, metrics, history = dpo.train_dpo(inputs["sft"].path, inputs["sft"].tokenizer, train, held,
                                                _of(dpo.DPOSettings, config))
    save_model(out_dir, model, inputs["sft"].tokenizer, history.as_dict())
    return {**metrics, **run.as_metrics()}


def _dpo_estimate(config: dict, run: Settings) -> str:
    if run.fast:
        return FAST_ESTIMATE
    pairs = config["epochs"] * (config["n_rankings"] or profiles.stage_settings(run.profile, False, "comparisons")
                                ["n_prompts"]) * profiles.K * (profiles.K - 1) // 2
    return _minutes("dpo_pair", pairs, f"{config['epochs']} epoch of about {pairs:,} pairs", run)


def _grpo_settings(stage: str) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        table = _table(run, stage)
        return {**_filled(grpo.GRPOSettings, table, run.seed), "reward": table["reward"], "prompt_seed": run.seed}

    return settings_fn


def _train_grpo(config: dict, inputs: dict, out_dir: Path) -> dict:
    """From the SFT model, on prompts of PPO's split, rewarded by the reward model ("rm", the gold
    score only watched) or by the gold labeler itself ("gold")."""
    sft_artifact, tokenizer = inputs["sft"], inputs["sft"].tokenizer
    settings = _of(grpo.GRPOSettings, config)
    examples = _data(config).prompts("ppo", seed=config["prompt_seed"], n=settings.total_prompts)
    if config["reward"] == "rm":
        reward_fn, gold_fn = grpo.rm_reward(inputs["rm"].model, tokenizer), grpo.gold_reward
    else:
        reward_fn, gold_fn = grpo.gold_reward, None
    with footprint.Footprint() as run:
        model, history = grpo.train_grpo(sft_artifact.path, tokenizer, examples, reward_fn, settings,
                                         progress=True, gold_fn=gold_fn)
    save_model(out_dir, model, tokenizer, history.as_dict())
    last = max(1, len(history.reward) // 10)  # the last tenth of the run
    gold = history.gold if history.gold else history.reward
    return {"reward_start": history.reward[0], "reward_end": sum(history.reward[-last:]) / last,
            "gold_start": gold[0], "gold_end": sum(gold[-last:]) / last,
            "kl_end": sum(history.kl[-last:]) / last, "steps": len(history.step), **run.as_metrics()}


def _grpo_estimate(config: dict, run: Settings) -> str:
    if run.fast:
        return FAST_ESTIMATE
    answers = config["total_prompts"] * config["group_size"]
    return _minutes("grpo_answer", answers, f"{answers:,} answers in groups of {config['group_size']}", run)


# --------------------------------------------------------------------------------------------
# The pipeline, in order
# --------------------------------------------------------------------------------------------

#: Every stage of the course by name, in pipeline order. ``version``: bump it when a stage's code
#: changes what it produces, so that artifacts made by older code are rebuilt.
STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("tokenizer", settings_fn=_tokenizer_settings, train_fn=_train_tokenizer, load_fn=_load_tokenizer,
          version="3", estimate_fn=_tokenizer_estimate),
    Stage("base", settings_fn=_base_settings("base"), train_fn=_train_base_of("base"), load_fn=load_lm,
          requires=("tokenizer",), version="2", estimate_fn=_base_estimate_of("base")),
    Stage("sft", settings_fn=_sft_settings_of("sft"), train_fn=_train_sft_from("base"), load_fn=load_lm,
          requires=("base",), version="4", estimate_fn=_sft_estimate_of("sft_epoch")),
    Stage("comparisons", settings_fn=_comparisons_settings("comparisons"), train_fn=_train_comparisons,
          load_fn=_no_model, requires=("sft",), version="5", estimate_fn=_comparisons_estimate),
    Stage("rm", settings_fn=_rm_settings("rm"), train_fn=_train_rm_on("comparisons"), load_fn=_load_rm,
          requires=("sft", "comparisons"), version="1", estimate_fn=_rm_estimate),
    Stage("ppo", settings_fn=_ppo_settings("ppo"), train_fn=_train_ppo_from("sft"), load_fn=load_lm,
          requires=("sft", "rm"), version="1", estimate_fn=_ppo_estimate_of()),
    Stage("ppo_ptx", settings_fn=_ppo_settings("ppo_ptx"), train_fn=_train_ppo_from("sft"), load_fn=load_lm,
          requires=("sft", "rm"), version="1", estimate_fn=_ppo_estimate_of()),
    Stage("ppo_high_beta", settings_fn=_ppo_settings("ppo_high_beta"), train_fn=_train_ppo_from("sft"), load_fn=load_lm,
          requires=("sft", "rm"), version="1", estimate_fn=_ppo_estimate_of()),
    # Notebook 07: PPO pushed past where the reward model can be trusted, and a second reward model
    # trained on another number of comparisons (profiles.py says how many, per profile).
    Stage("ppo_no_kl", settings_fn=_ppo_settings("ppo_no_kl"), train_fn=_train_ppo_from("sft"), load_fn=load_lm,
          requires=("sft", "rm"), version="1", estimate_fn=_ppo_estimate_of()),
    Stage("ppo_low_beta_long", settings_fn=_ppo_settings("ppo_low_beta_long"), train_fn=_train_ppo_from("sft"),
          load_fn=load_lm, requires=("sft", "rm"), version="1", estimate_fn=_ppo_estimate_of()),
    Stage("comparisons_scaled", settings_fn=_comparisons_settings("comparisons_scaled"),
          train_fn=_train_comparisons, load_fn=_no_model, requires=("sft",), version="5",
          estimate_fn=_comparisons_estimate),
    Stage("rm_scaled", settings_fn=_rm_settings("rm_scaled"), train_fn=_train_rm_on("comparisons_scaled"),
          load_fn=_load_rm, requires=("sft", "comparisons_scaled"), version="1", estimate_fn=_rm_estimate),
    # Notebook 08: beyond PPO, on the same data. DPO learns from the comparisons themselves (three
    # values of beta); GRPO samples groups of answers and needs no value model.
    Stage("dpo", settings_fn=_dpo_settings("dpo"), train_fn=_train_dpo, load_fn=load_lm,
          requires=("sft", "comparisons"), version="1", estimate_fn=_dpo_estimate),
    Stage("dpo_beta_low", settings_fn=_dpo_settings("dpo_beta_low"), train_fn=_train_dpo, load_fn=load_lm,
          requires=("sft", "comparisons"), version="1", estimate_fn=_dpo_estimate),
    Stage("dpo_beta_high", settings_fn=_dpo_settings("dpo_beta_high"), train_fn=_train_dpo, load_fn=load_lm,
          requires=("sft", "comparisons"), version="1", estimate_fn=_dpo_estimate),
    Stage("grpo", settings_fn=_grpo_settings("grpo"), train_fn=_train_grpo, load_fn=load_lm,
          requires=("sft", "rm"), version="1", estimate_fn=_grpo_estimate),
    Stage("grpo_gold", settings_fn=_grpo_settings("grpo_gold"), train_fn=_train_grpo, load_fn=load_lm,
          requires=("sft",), version="1", estimate_fn=_grpo_estimate),
    Stage("base_big", settings_fn=_base_settings("base_big"), train_fn=_train_base_of("base_big"), load_fn=load_lm,
          requires=("tokenizer",), version="3", estimate_fn=_base_estimate_of("base_big")),
    # Notebook 06's second model size: the same SFT and PPO recipes from the bigger base (the
    # reward model stays the small one, as InstructGPT used one 6B reward model for every size).
    Stage("sft_big", settings_fn=_sft_settings_of("sft_big"), train_fn=_train_sft_from("base_big"),
          load_fn=load_lm, requires=("base_big",), version="4", estimate_fn=_sft_estimate_of("sft_big_epoch")),
    Stage("ppo_big", settings_fn=_ppo_settings("ppo_big"), train_fn=_train_ppo_from("sft_big"), load_fn=load_lm,
          requires=("sft_big", "rm"), version="1", estimate_fn=_ppo_estimate_of("_big")),
    Stage("ppo_ptx_big", settings_fn=_ppo_settings("ppo_ptx_big"), train_fn=_train_ppo_from("sft_big"),
          load_fn=load_lm, requires=("sft_big", "rm"), version="1", estimate_fn=_ppo_estimate_of("_big")),
)}


def register_stage(name: str, settings_fn, train_fn, load_fn, requires=(), version: str = "1",
                   estimate_fn=None) -> Stage:
    """Add (or replace) a stage of the pipeline, e.g. an experiment of your own; returns it.
    See ``stages.Stage`` for what each function does."""
    stage = Stage(name, settings_fn=settings_fn, train_fn=train_fn, load_fn=load_fn, requires=tuple(requires),
                  version=str(version), estimate_fn=estimate_fn)
    STAGES[name] = stage
    return stage


def get_stage(name: str) -> Stage:
    return stages.stage_of(STAGES, name)


def settings(stage: str, run: Settings | None = None) -> dict:
    """The settings ``stage`` trains with in ``run`` (default: the current profile and fast mode)."""
    return get_stage(stage).settings_fn(run or current_settings())


def load_or_train(stage: str, **overrides) -> Artifact:
    """The artifact of ``stage``: from the cache if it was made with the current settings, else
    trained now (with whatever it needs first). ``overrides`` replace the stage's default
    settings, e.g. ``load_or_train("base", steps=600)``. See ``stages.load_or_train``."""
    return stages.load_or_train(STAGES, stage, **overrides)


def is_trained(stage: str) -> bool:
    """Whether ``load_or_train(stage)`` would only load: the stage and all it needs are in the
    cache with the current settings (see ``stages.is_current``)."""
    return stages.is_current(STAGES, stage)


def keep_trained(stage: str, save_fn: Callable[[Path], dict | None], settings: dict) -> bool:
    """Keep a model trained outside ``load_or_train`` as the artifact of ``stage`` (see
    ``stages.keep_trained``); True when it was stored."""
    return stages.keep_trained(STAGES, stage, save_fn, settings)


def keep_ppo(policy, tokenizer, history: dict, config: ppo.PPOConfig) -> bool:
    """Keep a policy trained with ``ppo.train_ppo`` in a notebook as the "ppo" artifact, so that
    ``load_or_train("ppo")`` (notebook 06) loads it instead of training the same run again.
    Only a run with the "ppo" stage's settings is kept."""

    def save(folder: Path) -> dict:
        save_model(folder, policy, tokenizer, history)
        return _ppo_metrics(history)

    return keep_trained("ppo", save, {**settings("ppo"), **asdict(config)})
