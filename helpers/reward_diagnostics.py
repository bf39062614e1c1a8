"""How far can a reward model get on its labelers' held-out rankings, and where does it err?

The RM's held-out accuracy alone hides two things: some pairs no judge can get right (the
labeler's order is a coin flip when the gold rubric scores both answers the same, a *gold tie*),
and some differences are easier to learn than others (which answer is right, against which one is
shorter). These diagnostics split the accuracy along both lines, with the gold labeler as the
referee. Notebook 04 reads them; ``benchmarks/rm_ceiling.py`` runs them on a trained RM.
"""

from __future__ import annotations

import math

import pandas as pd

from helpers import world
from helpers.labelers import gold_grade, gold_score
from helpers.reward import ScoredPairs


def ceiling_analysis(scored: ScoredPairs, examples: dict, tie_margin: float = 1e-9):
    """Per task family (and "all"): how much of the held-out accuracy any model could get.

    ``scored`` comes from ``reward.score_pairs(model, tokenizer, heldout)``, ``examples`` from
    ``comparisons.comparison_examples(artifact)`` (prompt id -> world.Example: the gold labeler
    needs it).
    A pair is a *gold tie* when the gold labeler scores both responses the same (within
    ``tie_margin``; e.g. two equally brief wrong answers): the labeler's order is then a coin
    flip. Columns:

    * ``pairs``: labeler preference pairs; ``gold_ties``: share of them that are gold ties;
    * ``oracle``: accuracy of a judge that scores with the gold rubric (a gold tie counts 1/2);
    * ``rm``: the RM's accuracy against the labeler (as ``rm_accuracy``: an RM tie is wrong);
    * ``rm_nontied``: the RM's accuracy against the labeler on the pairs that are not gold ties;
    * ``rm_nontied_vs_gold``: on those pairs, how often the RM orders them as the gold labeler does.

    Shares are NaN where a family has no pairs (or no non-tied pairs).
    """
    counts: dict[str, list[float]] = {}  # pairs, ties, oracle, rm, rm non-tied, rm vs gold non-tied
    for (ranking, w, l), chosen, rejected in zip(scored.pairs, scored.chosen.tolist(),
                                                 scored.rejected.tolist()):
        example = examples[ranking.prompt_id]
        gold_w, gold_l = gold_score(example, ranking.responses[w]), gold_score(example, ranking.responses[l])
        tied = abs(gold_w - gold_l) <= tie_margin
        rm_right = chosen > rejected
        rm_as_gold = (chosen > rejected) if gold_w > gold_l else (rejected > chosen)
        row = [1, tied, 0.5 if tied else float(gold_w > gold_l), rm_right,
               0 if tied else rm_right, 0 if tied else rm_as_gold]
        for key in (ranking.family, "all"):
            counts[key] = [a + float(b) for a, b in zip(counts.get(key, [0.0] * 6), row)]
    counts.setdefault("all", [0.0] * 6)
    share = lambda x, n: x / n if n else math.nan  # noqa: E731
    order = [f for f in world.FAMILIES if f in counts] + sorted(set(counts) - set(world.FAMILIES) - {"all"})
    rows = []
    for family in order + ["all"]:
        n, ties, oracle, rm, rm_nt, rm_gold = counts[family]
        rows.append({"family": family, "pairs": int(n), "gold_ties": share(ties, n),
                     "oracle": share(oracle, n), "rm": share(rm, n),
                     "rm_nontied": share(rm_nt, n - ties), "rm_nontied_vs_gold": share(rm_gold, n - ties)})
    return pd.DataFrame(rows).set_index("family")


def difference_kind(example, first: str, second: str, tie_margin: float = 1e-9) -> str:
    """What the gold labeler sees differ between two answers to ``example``.

    * ``"gold tie"``: the same gold score (the labeler's order is a coin flip);
    * ``"correctness"``: one is right and the other is not, or one answers and the other asks a
      question, refuses or says "I don't know" (anything but brevity);
    * ``"brevity only"``: both equally right, and one is padded or longer.
    """
    return _kind_of_grades(gold_grade(example, first), gold_grade(example, second), tie_margin)


def _kind_of_grades(a, b, tie_margin: float = 1e-9) -> str:
    if abs(a.score - b.score) <= tie_margin:
        return "gold tie"
    same = (a.correct, a.follows, a.refused, a.said_dont_know, a.harmless) == \
        (b.correct, b.follows, b.refused, b.said_dont_know, b.harmless)
    return "brevity only" if same else "correctness"


def accuracy_by_difference(scored: ScoredPairs, examples: dict, second: dict | None = None):
    """The held-out accuracy split by what differs between the two answers (``difference_kind``).

    Columns: ``pairs``; ``rm``, the reward model's agreement with the labeler; ``gold``, the
    gold labeler's; and, with ``second`` (prompt id -> another labeler's Ranking of the same
    answers), ``second_labeler``: how often that labeler orders the pair as the first did.
    """
    kinds = ("brevity only", "correctness", "gold tie")
    counts = {k: [0, 0, 0, 0] for k in kinds}  # pairs, rm right, gold right, second right
    for (ranking, w, l), chosen, rejected in zip(scored.pairs, scored.chosen.tolist(), scored.rejected.tolist()):
        example = examples[ranking.prompt_id]
        grade_w, grade_l = gold_grade(example, ranking.responses[w]), gold_grade(example, ranking.responses[l])
        other = second.get(ranking.prompt_id) if second else None
        row = [1, chosen > rejected, grade_w.score > grade_l.score, bool(other) and other.ranks[w] < other.ranks[l]]
        kind = _kind_of_grades(grade_w, grade_l)
        counts[kind] = [a + int(b) for a, b in zip(counts[kind], row)]
    rows = []
    for kind in kinds:
        n, rm, gold, other = counts[kind]
        row = {"kind": kind, "pairs": n, "rm": rm / n if n else math.nan, "gold": gold / n if n else math.nan}
        if second is not None:
            row["second_labeler"] = other / n if n else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("kind")
