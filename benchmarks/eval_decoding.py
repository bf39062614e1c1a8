"""Does the way we decode decide who wins? PPO against SFT, greedy and sampled, per task family.

    python benchmarks/eval_decoding.py                  # PPO vs SFT (about 30 s once both exist)
    python benchmarks/eval_decoding.py --models sft ppo_ptx --seeds 0 1 2 3

The course judges greedy answers (temperature 0). PPO trained on samples at temperature 1, and
a sampled answer is what the policy "is", so this script also judges samples at temperature 1
(a few seeds). For each decoding it prints the gold labeler's win rate of the second model over
the first with its 95% bootstrap interval and both mean gold scores; then, for greedy decoding,
per family: how often the two answers are the very same text, and how often the second model
wins, ties and loses. Identical answers always tie, so they cap the win rate at
1 - identical / 2.

Uses the cached artifacts of `load_or_train` (trains what is missing, with the default settings).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import evaluation, generation, labelers, world  # noqa: E402
from helpers.config import settings  # noqa: E402
from helpers.pipeline import load_or_train  # noqa: E402


def answers(artifact, examples, temperature: float, seed: int) -> list[str]:
    return generation.generate(artifact.model, artifact.tokenizer, [e.prompt for e in examples],
                               temperature=temperature, max_new_tokens=48, progress=False, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs=2, default=["sft", "ppo"], metavar=("BASELINE", "MODEL"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="sampling seeds for the temperature-1 rows")
    args = parser.parse_args()
    if settings().fast:
        print("COURSE_FAST is set: the numbers below come from smoke-test models and mean nothing.")
    first, second = (load_or_train(name) for name in args.models)
    eval_set = world.prompts("eval")
    rows = []
    greedy_judgments: list[float] = []
    greedy_identical: list[bool] = []
    for label, temperature, seeds in (("greedy", 0.0, [0]), ("T = 1", 1.0, args.seeds)):
        for seed in seeds:
            a, b = answers(first, eval_set, temperature, seed), answers(second, eval_set, temperature, seed)
            gold_a = [labelers.gold_score(e, r) for e, r in zip(eval_set, a)]
            gold_b = [labelers.gold_score(e, r) for e, r in zip(eval_set, b)]
            rate, low, high = evaluation.win_rate(gold_b, gold_a)
            identical = [x == y for x, y in zip(a, b)]
            if temperature == 0.0:
                greedy_judgments, greedy_identical = evaluation.judgments(gold_b, gold_a), identical
            rows.append({"decoding": label, "seed": seed if temperature else "-",
                         f"{args.models[1]} wins": f"{rate:.1%} [{low:.1%}, {high:.1%}]",
                         f"gold {args.models[0]}": sum(gold_a) / len(gold_a),
                         f"gold {args.models[1]}": sum(gold_b) / len(gold_b),
                         "identical answers": sum(identical) / len(identical)})

    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{args.models[1]} against {args.models[0]}, gold labeler, {len(eval_set)} evaluation prompts")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        per_prompt = pd.DataFrame({"family": [e.family for e in eval_set], "identical": greedy_identical,
                                   "wins": [j == 1.0 for j in greedy_judgments],
                                   "ties": [j == 0.5 for j in greedy_judgments],
                                   "losses": [j == 0.0 for j in greedy_judgments]})
        groups = per_prompt.groupby("family", sort=False)
        table = groups.mean()
        table.insert(0, "n", groups.size())
        print(f"\ngreedy answers per family ({args.models[1]} against {args.models[0]}):")
        print(table.to_string(float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
