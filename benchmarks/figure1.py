"""The course's Figure 1: every method at both model sizes, against the small SFT model.

    python benchmarks/figure1.py            # trains what is missing (tiny, full mode: ppo_big and
                                            # ppo_ptx_big take the longest), then prints the tables
    COURSE_FAST=1 python benchmarks/figure1.py   # a smoke run, seconds

InstructGPT's Figure 1 shows, at each model size, how often people preferred each kind of model to
the 175B SFT model: GPT-3 below prompted GPT-3 below SFT below PPO and PPO-ptx. This script makes
the same table on the course's two base sizes: base zero-shot, base prompted with the fixed
few-shot prefix (``evaluation.few_shot_prefixes``), SFT, PPO and PPO-ptx, small and big, each
answering the held-out evaluation prompts greedily and judged by the gold labeler. It prints

* per method and size: the mean gold score and the win rate over the small SFT model (95%
  bootstrap interval), as notebook 06 draws them;
* the paper's headline comparisons: the small PPO model against the big base, prompted and not;
* both bases' held-out pretraining loss, and each stage's training time on this machine (as
  recorded when it was built; a stage loaded from the cache reports its original time).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import course_data, evaluation, generation, labelers  # noqa: E402
from helpers.config import settings  # noqa: E402
from helpers.pipeline import load_or_train  # noqa: E402

#: (method, small stage, big stage, how it is asked)
METHODS = (
    ("base", "base", "base_big", "zero-shot"),
    ("base few-shot", "base", "base_big", "few-shot"),
    ("SFT", "sft", "sft_big", "chat"),
    ("PPO", "ppo", "ppo_big", "chat"),
    ("PPO-ptx", "ppo_ptx", "ppo_ptx_big", "chat"),
)
SIZES = ("small", "big")


def answers_of(model, tokenizer, eval_set, how: str, prefixes, one_line: bool) -> list[str]:
    if how == "chat":
        return generation.generate(model, tokenizer, [e.prompt for e in eval_set], temperature=0.0,
                                   max_new_tokens=48 if one_line else 128)
    inputs = [prefixes.prompt(e) if how == "few-shot" else evaluation.base_prompt(e.prompt) for e in eval_set]
    texts = generation.generate(model, tokenizer, inputs, chat=False, temperature=0.0,
                                max_new_tokens=40 if one_line else 128)
    return [evaluation.few_shot_answer(t, one_line=one_line) for t in texts] if how == "few-shot" else texts


def main() -> None:
    run = settings()
    rubric = course_data.has_rubric()
    eval_set = course_data.prompts("eval")[:: 10 if run.fast else 1]
    prefixes = evaluation.few_shot_prefixes(course_data.prompts("sft"), n_shots=3)
    artifacts, load_seconds = {}, {}
    for stage in dict.fromkeys(s for _, small, big, _ in METHODS for s in (small, big)):
        start = time.perf_counter()
        artifacts[stage] = load_or_train(stage)
        load_seconds[stage] = time.perf_counter() - start
    tokenizer = artifacts["sft"].tokenizer

    gold = {}
    for method, small, big, how in METHODS:
        for size, stage in zip(SIZES, (small, big)):
            texts = answers_of(artifacts[stage].model, tokenizer, eval_set, how, prefixes, rubric)
            gold[(method, size)] = labelers.gold_scores(eval_set, texts)
    reference = gold[("SFT", "small")]

    print(f"\nprofile {run.profile}{' (fast)' if run.fast else ''}, {len(eval_set)} evaluation prompts, gold labeler")
    print(f"\n{'method':<15}{'size':<7}{'gold':>7}   win rate over small SFT [95% CI]")
    for method, *_ in METHODS:
        for size in SIZES:
            scores = gold[(method, size)]
            rate, low, high = evaluation.win_rate(scores, reference)
            shown = "(itself)" if (method, size) == ("SFT", "small") else f"{rate:6.1%} [{low:.1%}, {high:.1%}]"
            print(f"{method:<15}{size:<7}{sum(scores) / len(scores):7.3f}   {shown}")

    print("\nheadline comparisons (gold win rate, 95% CI):")
    for (a, sa), (b, sb) in ((("PPO", "small"), ("base few-shot", "big")), (("PPO", "small"), ("base", "big")),
                             (("SFT", "small"), ("base few-shot", "small")),
                             (("SFT", "big"), ("base few-shot", "big"))):
        rate, low, high = evaluation.win_rate(gold[(a, sa)], gold[(b, sb)])
        print(f"  {sa} {a} over {sb} {b}: {rate:.1%} [{low:.1%}, {high:.1%}]")
    for size in SIZES:
        order = ["base", "base few-shot", "SFT", "PPO"]
        means = [sum(gold[(m, size)]) / len(eval_set) for m in order]
        print(f"  {size}: PPO > SFT > prompted base > base by mean gold score: "
              f"{all(x < y for x, y in zip(means, means[1:]))}")

    print("\nheld-out pretraining loss (nats/token): "
          + ", ".join(f"{s} {artifacts[s].metrics['heldout_loss']:.3f}" for s in ("base", "base_big")
                      if "heldout_loss" in artifacts[s].metrics)
          + (" (big: the weights the course ships)" if artifacts["base_big"].metrics.get("shipped") else ""))
    print("\nstage                 trained in (s)   this run (s)")
    for stage, artifact in artifacts.items():
        print(f"{stage:<22}{artifact.info.get('train_seconds', float('nan')):>14.0f}   {load_seconds[stage]:>12.1f}")


if __name__ == "__main__":
    main()
