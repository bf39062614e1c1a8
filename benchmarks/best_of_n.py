"""How much better can any policy near SFT be? Best-of-n of SFT's own samples, picked by the gold
labeler and by the reward model, against SFT's greedy answer.

    python benchmarks/best_of_n.py                 # n up to 16 (1-2 min once SFT and RM exist)
    python benchmarks/best_of_n.py --n 32 --families

Best-of-n (Gao et al. 2022; Stiennon et al. 2020) samples n answers at temperature 1 and keeps the
one a judge scores highest. Its KL to the sampling policy is at most log n - (n - 1) / n nats,
about what a PPO run with a KL penalty moves, so it is a yardstick for PPO:

* picked by the **gold labeler**, it shows how much better answers SFT can already produce: an
  upper bound for what reinforcement learning can find at that KL without learning new skills;
* picked by the **reward model**, it shows how much of that the RM can see. Where the RM-picked
  answer is no better than SFT's greedy one, PPO against that RM has little to climb.

For each n the table gives the mean gold score of the picked answers and their gold win rate over
SFT's greedy answers (95% bootstrap interval). ``--families`` adds the same per task family for
the largest n. Uses the cached "sft" and "rm" artifacts of `load_or_train` (trained if missing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import evaluation, generation, labelers, reward, world  # noqa: E402
from helpers.config import settings  # noqa: E402
from helpers.pipeline import load_or_train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16, help="largest n (samples per prompt)")
    parser.add_argument("--families", action="store_true", help="per-family table at the largest n")
    parser.add_argument("--seed", type=int, default=0,
                        help="sampling seeds 1000 * (seed + 1) + j, j < n (0: notebook 05's)")
    args = parser.parse_args()
    if settings().fast:
        print("COURSE_FAST is set: the numbers below come from smoke-test models and mean nothing.")
    sft, rm = load_or_train("sft"), load_or_train("rm")
    eval_set = world.prompts("eval")
    prompts = [e.prompt for e in eval_set]
    greedy = generation.generate(sft.model, sft.tokenizer, prompts, temperature=0.0, max_new_tokens=48)
    greedy_gold = [labelers.gold_score(e, r) for e, r in zip(eval_set, greedy)]

    from tqdm.auto import tqdm

    gold = [[] for _ in eval_set]
    rm_scores = [[] for _ in eval_set]
    for j in tqdm(range(args.n), desc="sampling SFT answers"):
        texts = generation.generate(sft.model, sft.tokenizer, prompts, temperature=1.0,
                                    max_new_tokens=48, seed=1000 * (args.seed + 1) + j)
        scores = reward.score(rm.model, rm.tokenizer, prompts, texts).tolist()
        for i, (example, text) in enumerate(zip(eval_set, texts)):
            gold[i].append(labelers.gold_score(example, text))
            rm_scores[i].append(scores[i])

    import pandas as pd

    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.n]

    def curves(pick: list[int], ns: list[int]) -> list[dict]:
        """One row per n: best-of-n picked by gold and by the RM, on the prompts ``pick`` keeps."""
        def sub(values):
            return [values[i] for i in pick]

        rows = [{"n": n, "KL bound": evaluation.best_of_n_kl(n),
                 "SFT greedy": sum(sub(greedy_gold)) / len(pick)} for n in ns]
        for name, judge in (("gold", gold), ("RM", rm_scores)):
            for row, point in zip(rows, evaluation.best_of_n_curve(sub(judge), sub(gold), sub(greedy_gold), ns)):
                row[f"{name}-picked gold"] = point["gold"]
                row[f"{name}-picked wins"] = f"{point['win']:.1%} [{point['low']:.1%}, {point['high']:.1%}]"
        return rows

    print(f"SFT greedy: mean gold {sum(greedy_gold) / len(greedy_gold):.3f} on {len(eval_set)} "
          f"evaluation prompts; best-of-n among SFT samples at temperature 1; wins: over SFT greedy")
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        table = pd.DataFrame(curves(list(range(len(eval_set))), ns)).drop(columns="SFT greedy")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if args.families:
            per_family = {family: curves([i for i, e in enumerate(eval_set) if e.family == family], ns[-1:])[0]
                          for family in world.FAMILIES if any(e.family == family for e in eval_set)}
            print(f"\nper family, n = {ns[-1]}:")
            print(pd.DataFrame(per_family).T.drop(columns=["n", "KL bound"]).to_string(
                float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
