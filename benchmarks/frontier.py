"""PPO, DPO, GRPO and best-of-n on one ruler: the frontier table of notebook 08.

    python benchmarks/frontier.py                  # tiny profile, full mode (trains what is missing)
    python benchmarks/frontier.py --no-memory      # skip the memory probes (about a minute)
    python benchmarks/frontier.py --samples 2 --best-of 8

For every method, from the cached stages of ``load_or_train`` (trained first if missing: "ppo",
"dpo", "dpo_beta_low", "dpo_beta_high", "grpo", "grpo_gold"), the table gives:

* gold: the gold labeler's mean score of answers sampled at temperature 1 to every evaluation prompt;
* KL: the KL from SFT of those same answers, log pi(y|x) - log pi_SFT(y|x) summed over each answer's
  tokens and averaged (``helpers.frontier``): one measure for every policy, whatever its training
  logged. Best-of-n: the formula log n - (n - 1) / n;
* win over SFT: how often the gold labeler prefers the policy's answer to SFT's answer of the same
  round to the same prompt (ties half), with a 95% bootstrap interval over prompts;
* seconds: training time as recorded by the stage (best-of-n: sampling and scoring its pool for all
  evaluation prompts, paid again for every prompt it answers);
* peak MB: the memory a short run of the method added to a fresh Python process of its own (RSS
  sampled every 20 ms by ``helpers.footprint``; libraries imported before the count starts), so no
  method reuses memory another one freed. A short run reaches the peak a long one does: every step
  holds the same models and batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers import course_data, evaluation, footprint, frontier, pipeline, speed  # noqa: E402
from helpers.config import settings  # noqa: E402
from helpers.pipeline import load_or_train  # noqa: E402

#: The methods of the table: (row name, stage, method).
POLICIES = [("PPO, β = 0.2", "ppo", "PPO"), ("DPO, β = 0.03", "dpo_beta_low", "DPO"), ("DPO, β = 0.1", "dpo", "DPO"),
            ("DPO, β = 0.5", "dpo_beta_high", "DPO"), ("GRPO", "grpo", "GRPO"),
            ("GRPO (gold reward)", "grpo_gold", "GRPO (gold reward)")]

# --------------------------------------------------------------------------------------------
# Memory: a short run of each method in a fresh process
# --------------------------------------------------------------------------------------------


def _settings(settings_class, config: dict):
    """The ``settings_class`` instance of a stage's settings dict (which holds a few keys more)."""
    return settings_class(**{f.name: config[f.name] for f in dataclasses.fields(settings_class)})


def _probe(method: str) -> dict:
    """Run a few steps of ``method`` from the cached stages, counting the memory it adds."""
    import datasets  # noqa: F401 - imported before counting: the same libraries for every method
    import trl  # noqa: F401

    from helpers import comparisons, dpo, generation, grpo, labelers, ppo, reward

    with footprint.Footprint() as run:
        sft = load_or_train("sft")
        if method == "PPO":
            rm = load_or_train("rm")
            config = pipeline.settings("ppo")
            ppo_config, prompts = pipeline.ppo_config_and_prompts(config)
            ppo_config.total_episodes = 2 * ppo_config.batch_size  # two iterations
            ppo.train_ppo(ppo.prepare_models(sft, rm), prompts, ppo_config, progress=False,
                          gold_fn=labelers.gold_scores)
        elif method == "DPO":
            train, held = comparisons.load_comparisons(load_or_train("comparisons"))
            settings = _settings(dpo.DPOSettings, {**pipeline.settings("dpo"), "n_rankings": 32})
            dpo.train_dpo(sft.path, sft.tokenizer, train, held[:8], settings, progress=False)
        elif method.startswith("GRPO"):
            config = pipeline.settings("grpo")
            settings = _settings(grpo.GRPOSettings, config)
            settings.total_prompts = 2 * settings.prompts_per_step  # two steps
            examples = course_data.prompts("ppo", n=settings.total_prompts)
            if method == "GRPO":
                reward_fn = grpo.rm_reward(load_or_train("rm").model, sft.tokenizer)
            else:
                reward_fn = grpo.gold_reward
            grpo.train_grpo(sft.path, sft.tokenizer, examples, reward_fn, settings, progress=False)
        elif method == "best-of-n":
            rm = load_or_train("rm")
            prompts = [e.prompt for e in course_data.prompts("eval")[:64]]
            for j in range(16):
                texts = generation.generate(sft.model, sft.tokenizer, prompts, temperature=1.0, max_new_tokens=48,
                                            seed=j)
                reward.score(rm.model, rm.tokenizer, prompts, texts)
        else:
            raise ValueError(f"unknown method {method!r}")
    return {"method": method, "peak_mb": run.peak_mb, "kind": run.kind}


def measure_memory(methods: list[str]) -> dict[str, float]:
    """Peak memory added by a short run of each method, each in a fresh process."""
    out = {}
    for method in methods:
        done = subprocess.run([sys.executable, __file__, "--probe", method], cwd=ROOT, text=True,
                              capture_output=True, env=os.environ.copy())
        if done.returncode != 0:
            print(f"memory probe of {method} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("PROBE "))
        out[method] = json.loads(line.removeprefix("PROBE "))["peak_mb"]
    return out


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="answers per prompt from every policy")
    parser.add_argument("--best-of", type=int, default=16, help="the largest n of best-of-n")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--stride", type=int, default=None,
                        help="every stride-th evaluation prompt (default: all; every 10th in fast mode)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe
    args = parser.parse_args()
    speed.apply(quiet=True)  # the course's thread count (COURSE_THREADS, or the one measured fastest here)
    if args.probe:
        print("PROBE " + json.dumps(_probe(args.probe)))
        return
    if settings().fast:
        print("COURSE_FAST is set: the numbers below come from smoke-test models and mean nothing.")

    sft, rm = load_or_train("sft"), load_or_train("rm")
    tokenizer = sft.tokenizer
    trained = {name: load_or_train(stage) for name, stage, _ in POLICIES}
    eval_set = course_data.prompts("eval")[::args.stride or (10 if settings().fast else 1)]
    tokens = 48 if course_data.has_rubric() else 96
    base = frontier.sample_policy(sft.model, sft.model, tokenizer, eval_set, args.samples, tokens, seed=1000)

    rows = [("SFT", base.mean_gold, base.mean_kl, None, 0.0, "SFT")]
    for name, stage, method in POLICIES:
        sample = frontier.sample_policy(trained[name].model, sft.model, tokenizer, eval_set, args.samples, tokens,
                                        seed=1000)
        rows.append((name, sample.mean_gold, sample.mean_kl, frontier.win_rate_over(sample.gold, base.gold),
                     trained[name].metrics.get("seconds"), method))
    with footprint.Footprint() as pool_cost:
        pool = frontier.sample_policy(sft.model, sft.model, tokenizer, eval_set, args.best_of, tokens, seed=2000)
        proxy = frontier.score_pool(rm.model, tokenizer, eval_set, pool)
    n = 1
    while n <= args.best_of:
        picks = frontier.best_of_n_picks(proxy, pool.gold, n)
        rows.append((f"best-of-{n}", float(picks.mean()), evaluation.best_of_n_kl(n),
                     frontier.win_rate_over(picks, base.gold), pool_cost.seconds if n == args.best_of else None,
                     "best-of-n"))
        n *= 2

    memory = {} if args.no_memory else measure_memory(["PPO", "DPO", "GRPO", "GRPO (gold reward)", "best-of-n"])
    run = settings()
    print(f"\nprofile {run.profile}{' (fast)' if run.fast else ''}: {len(eval_set)} evaluation prompts, "
          f"{args.samples} answers each per policy; best-of-n from a pool of {args.best_of}")
    header = f"{'method':<22} {'gold':>6} {'KL':>6}  {'win over SFT [95% CI]':<22} {'seconds':>8} {'peak MB':>8}"
    print(header + "\n" + "-" * len(header))
    for name, gold, kl, win, seconds, method in rows:
        win_text = "-" if win is None else f"{win[0]:.1%} [{win[1]:.1%}, {win[2]:.1%}]"
        seconds_text = "-" if seconds is None else f"{seconds:.0f}"
        peak = memory.get(method)  # one probe per method: the same for every row of it
        print(f"{name:<22} {gold:>6.3f} {kl:>6.2f}  {win_text:<22} {seconds_text:>8} "
              f"{'-' if peak is None else f'{peak:.0f}':>8}")
    print("\nseconds: training, as recorded by each stage (best-of-n: sampling and scoring its pool once);"
          "\npeak MB: memory a short run of the method added to a fresh process (RSS; on a GPU, tensor memory).")


if __name__ == "__main__":
    main()
