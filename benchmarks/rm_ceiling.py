"""What keeps the reward model below the labelers' agreement: gold ties, the oracle ceiling, a copy probe.

    OMP_NUM_THREADS=1 python benchmarks/rm_ceiling.py

Reads the cached "comparisons" and "rm" artifacts (and "base" and "sft" for the copy probe) as
found, without checking their settings: it never trains anything and exits if one is missing.
Prints, per task family of the held-out rankings, the share of labeler pairs that are gold ties
(the gold labeler scores both answers the same, so the labeler's order is a coin flip), the
accuracy of a judge that scores with the gold rubric (ties count 1/2: the ceiling for any model),
and the RM's accuracy, overall and on the pairs that are not gold ties. Then the copy probe: the
probability that the base and the SFT model repeat the name the prompt gave
("Hi! My name is Finn." -> "Hi Finn!"), against chance, 1 / the number of names.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from helpers import comparisons, evaluation, pipeline, reward, reward_diagnostics, stages  # noqa: E402
from helpers.config import settings  # noqa: E402


def load_as_found(name: str) -> stages.Artifact:
    """A cached artifact, loaded whatever settings it was made with (never trained here)."""
    run = settings()
    path = run.stage_dir(name)
    info = stages.read_info(path)
    if info is None:
        sys.exit(f"no cached {name!r} artifact in {path}: run its notebook (or load_or_train({name!r})) first")
    model, tokenizer = pipeline.get_stage(name).load_fn(path, info)
    return stages.Artifact(name, path, info, model, tokenizer)


def main() -> None:
    started = time.perf_counter()
    comparison_set, rm = load_as_found("comparisons"), load_as_found("rm")
    _, heldout = comparisons.load_comparisons(comparison_set)
    examples = comparisons.comparison_examples(comparison_set)
    scored = reward.score_pairs(rm.model, rm.tokenizer, heldout)
    table = reward_diagnostics.ceiling_analysis(scored, examples)

    agreement = comparison_set.metrics.get("labeler_agreement", float("nan"))
    print(f"RM ceiling on the held-out rankings of {comparison_set.path} ({len(heldout)} prompts, "
          f"{len(scored.pairs)} labeler pairs), rm from {rm.path}")
    print("gold_ties: share of pairs the gold labeler scores equal (labeler order = coin flip); "
          "oracle: gold-rubric judge vs the labeler, ties 1/2; rm: RM vs the labeler; "
          "rm_nontied(_vs_gold): RM on non-tied pairs vs the labeler (vs the gold order)")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"labeler agreement (a second labeler vs the first, comparisons artifact): {agreement:.3f}; "
          f"recorded RM held-out accuracy: {rm.metrics.get('heldout_accuracy', float('nan')):.3f}")

    base, sft = load_as_found("base"), load_as_found("sft")
    probes = {"base": evaluation.copy_probe(base.model, base.tokenizer, chat=False),
              "sft": evaluation.copy_probe(sft.model, sft.tokenizer, chat=True)}
    chance = probes["sft"]["chance"]
    print(f"copy probe ('Hi! My name is Finn.' -> 'Hi' + name?, {probes['sft']['prompts']} prompts): "
          + "; ".join(f"{name} P(given name) {p['p_name']:.3f}, P(any name) {p['p_any_name']:.3f}, "
                      f"given name likeliest {p['top1']:.3f}" for name, p in probes.items())
          + f"; chance 1/{round(1 / chance)} = {chance:.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
