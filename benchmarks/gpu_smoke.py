"""Run this first on a GPU: does every stage of the gpu profile train, and how long will the notebooks take?

    COURSE_PROFILE=gpu python benchmarks/gpu_smoke.py            # on Colab: !python benchmarks/gpu_smoke.py

It loads the gpu profile's models and data (the tokenizer and base stages are kept as artifacts,
so the notebooks reuse them), then times ONE step of each stage at its real settings and prints:

* each model's dtype (float32 weights: a bfloat16 checkpoint trained as is would not learn, see
  ``helpers.precision``) and the share of weights one step at the stage's learning rate changed;
* the number of answer tokens SFT learns from in one example (0 would mean no learning at all);
* seconds per step and the peak GPU memory with all of PPO's models and the gold reward model
  loaded together;
* each notebook's predicted run time: seconds per step times the steps its stages run.

The predictions are estimates from one step each (the first steps of a run are slower, the
later ones faster); the README's gpu column quotes this script's output on a T4 and an A100.
Offline on a CPU, against a cache of the hub models and datasets, it checks that all of this
runs (the tests do that with a tiny fake hub); its timings then mean nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("COURSE_PROFILE", "gpu")

import torch  # noqa: E402

from helpers import comparisons, course_data, gold_rm, labelers, pipeline, ppo, precision, reward, sft  # noqa: E402
from helpers.config import device, settings  # noqa: E402
from helpers.models import load_reward_model  # noqa: E402
from helpers.profiles import hub_id  # noqa: E402


def timed(fn):
    """(fn's result, seconds), waiting for the GPU to finish."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


def changed_share(before: dict, model) -> float:
    """Share of the trainable weights that differ from ``before`` (a state-dict copy)."""
    changed = total = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            changed += int((p.detach() != before[name]).sum())
            total += p.numel()
    return changed / max(1, total)


def snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def dtype_of(model) -> str:
    return str(next(model.parameters()).dtype).replace("torch.", "")


def sft_step(base, demos, config: dict) -> dict:
    model = copy.deepcopy(base.model).train()
    tokenizer = base.tokenizer
    examples = [sft.build_sft_example(tokenizer, d.prompt, d.response) for d in demos[: config["batch_size"]]]
    for e in examples:
        e["attention_mask"] = [1] * len(e["input_ids"])
    width = min(config["max_length"], max(len(e["input_ids"]) for e in examples))

    def column(key, fill):
        return torch.tensor([e[key][:width] + [fill] * (width - len(e[key][:width])) for e in examples],
                            device=device())

    ids = column("input_ids", tokenizer.pad_token_id)
    mask, labels = column("attention_mask", 0), column("assistant_mask", 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"])
    scaler = precision.grad_scaler(device())
    before = snapshot(model)

    def step():
        with precision.autocast(device()):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = sft.masked_sft_loss(logits.float(), ids, mask, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

    _, seconds = timed(step)
    answer_tokens = sum(examples[0]["assistant_mask"])
    return {"seconds": seconds, "changed": changed_share(before, model), "dtype": dtype_of(model),
            "answer_tokens": answer_tokens}


def main() -> None:
    run = settings()
    print(f"profile={run.profile} fast={run.fast} device={device()} "
          f"16-bit arithmetic: {precision.autocast_dtype(device()) or 'none (float32)'}")
    rows = []
    tokenizer = pipeline.load_or_train("tokenizer").tokenizer
    (base, base_seconds) = timed(lambda: pipeline.load_or_train("base"))
    rows.append(("base model", dtype_of(base.model), f"{base_seconds:.1f} s to load", ""))
    demos = course_data.demonstrations()

    sft_config = pipeline.settings("sft")
    step = sft_step(base, demos, sft_config)
    rows.append(("SFT step", step["dtype"], f"{step['seconds']:.2f} s", f"{step['changed']:.1%} of weights changed; "
                 f"{step['answer_tokens']} answer tokens in example 1"))
    sft_steps = sft_config["epochs"] * len(demos) / sft_config["batch_size"]

    comparisons_config = pipeline.settings("comparisons")
    prompts = course_data.prompts("rm", n=8)
    (items, sample_seconds) = timed(lambda: comparisons.sample_for_ranking(
        base.model, tokenizer, prompts, comparisons_config["k"], max_new_tokens=comparisons_config["max_new_tokens"],
        progress=False))
    per_prompt = sample_seconds / len(prompts)
    rows.append(("sampling K answers", "", f"{per_prompt:.2f} s per prompt", f"K = {comparisons_config['k']}"))
    (gold, gold_seconds) = timed(lambda: gold_rm.scores([e.prompt for e, rs in items for _ in rs],
                                                        [r for _, rs in items for r in rs]))
    rows.append(("gold RM scoring", dtype_of(gold_rm.load().model), f"{gold_seconds / len(gold):.3f} s per answer",
                 hub_id("gold_rm")))

    rm_config = pipeline.settings("rm")
    rm = load_reward_model(base.path, device())
    noise = labelers.calibrate_noise_to_scores([gold[i:i + len(rs)] for i, (_, rs) in
                                                zip(range(0, len(gold), comparisons_config["k"]), items)])
    rankings = comparisons.rank_with_team(items, labelers.labeler_team(6, noise=noise))
    before = snapshot(rm)
    settings_one_step = reward.RMSettings(**{**{k: rm_config[k] for k in reward.RMSettings.__dataclass_fields__},
                                             "prompts_per_batch": len(rankings)})
    (_, rm_seconds) = timed(lambda: reward.train_reward_model(rm, tokenizer, rankings, settings_one_step,
                                                              progress=False))
    rows.append(("RM step", dtype_of(rm), f"{rm_seconds:.2f} s", f"{changed_share(before, rm):.1%} of weights changed"))
    rm_steps = comparisons_config["n_prompts"] / rm_config["prompts_per_batch"] * rm_config["epochs"]

    ppo_config, ppo_prompts = pipeline.ppo_config_and_prompts(pipeline.settings("ppo"))
    models = ppo.PPOModels(policy=copy.deepcopy(base.model).requires_grad_(True), reference=base.model,
                           value_model=ppo.value_model_from(rm), reward_model=rm.eval(), tokenizer=tokenizer)
    before = snapshot(models.policy)
    one = dataclasses.replace(ppo_config, total_episodes=ppo_config.batch_size, reward_norm=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    (_, ppo_seconds) = timed(lambda: ppo.train_ppo(models, ppo_prompts, one, progress=False))
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if torch.cuda.is_available() else "n/a (CPU)"
    rows.append(("PPO iteration", dtype_of(models.policy), f"{ppo_seconds:.1f} s",
                 f"{changed_share(before, models.policy):.1%} of weights changed; peak memory {peak}"))

    print(f"\n{'step':<20} {'dtype':<10} {'time':<24} notes")
    for name, dtype, seconds, notes in rows:
        print(f"{name:<20} {dtype:<10} {seconds:<24} {notes}")

    n_rank = comparisons_config["n_prompts"] + comparisons_config["heldout_prompts"]
    predicted = {
        "02 SFT": sft_steps * step["seconds"],
        "03 rankings": n_rank * per_prompt + n_rank * comparisons_config["k"] * gold_seconds / len(gold),
        "04 reward model": 2 * rm_steps * rm_seconds,  # the stage, and the shuffled-pairs comparison
        "05 PPO": 2 * ppo_config.n_iterations * ppo_seconds,  # against the RM, and against the gold RM
        "06 evaluation": 2 * ppo_config.n_iterations * ppo_seconds,  # PPO-ptx and the high-beta run
    }
    print("\npredicted run time of each notebook (estimates from one step each):")
    for name, seconds in predicted.items():
        print(f"  {name:<18} {seconds / 60:6.1f} min")
    if step["answer_tokens"] == 0 or step["changed"] < 0.5:
        sys.exit("FAILED: SFT would not learn (no answer tokens, or most weights unchanged by a step)")


if __name__ == "__main__":
    main()
