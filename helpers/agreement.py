"""How a student's rankings agree with the simulated labelers and the gold labeler.

InstructGPT's labelers agreed with each other on 72.6% of response pairs (the paper's
inter-labeler agreement). ``agreement_report`` puts the student in that picture: on the very
responses the student ranked (with ``widgets.RankingWidget``), how often the student orders a
pair the way the gold labeler does, the way each simulated labeler does, and how often the
simulated labelers agree with each other. The report is a dict that prints as a small table::

    print(agreement.agreement_report(ranker.rankings, items, team))
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from helpers import labelers
from helpers.labelers import SimulatedLabeler
from helpers.rankings import Ranking
from helpers.world import Example


def _example_lookup(examples) -> dict[str, Example]:
    lookup = {}
    for entry in examples:
        example = entry[0] if isinstance(entry, tuple) else entry
        lookup[example.id] = example
    return lookup


class AgreementReport(dict):
    """The numbers of ``agreement_report`` (a dict) that prints as a small table."""

    def table(self) -> str:
        def pct(value):
            return "   n/a" if value is None or math.isnan(value) else f"{100 * value:5.1f}%"

        lines = [f"Agreement on {self['n_rankings']} rankings: the share of response pairs "
                 "two labelers order the same way (a tie counts for nothing)",
                 f"  {'you vs the gold labeler':<40} {pct(self['gold'])}"]
        for name, value in self["labelers"].items():
            lines.append(f"  {'you vs ' + name:<40} {pct(value)}")
        lines += [f"  {'you vs the simulated labelers (mean)':<40} {pct(self['labelers_mean'])}",
                  f"  {'simulated labelers with each other':<40} {pct(self['team_with_each_other'])}",
                  f"  {'InstructGPT labelers (paper)':<40} {pct(self['paper'])}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.table())


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def agreement_report(student_rankings: list[Ranking], examples,
                     team: list[SimulatedLabeler] | None = None) -> AgreementReport:
    """How often the student orders a pair of responses as the gold labeler and as each
    simulated labeler would, on the very responses the student ranked.

    ``examples``: the world.Examples of the ranked prompts (or the widget's items), to find what
    the gold rubric needs. The team is copied, so computing a report leaves the labelers'
    random state alone. Returns an ``AgreementReport``: a dict with ``n_rankings``, ``n_pairs``
    (strictly ordered by both the student and the gold labeler), ``gold``, ``labelers``
    ({name: agreement}), ``labelers_mean``, ``team_with_each_other`` and ``paper`` (0.726),
    that prints as a table.
    """
    team = labelers.labeler_team() if team is None else team
    team = [dataclasses.replace(labeler) for labeler in team]  # fresh random state
    lookup = _example_lookup(examples)
    missing = sorted({r.prompt_id for r in student_rankings} - set(lookup))
    if missing:
        raise ValueError(f"no example for prompt id(s) {missing}: pass the examples that were ranked")
    rankings = list(student_rankings)
    ranked_examples = [lookup[r.prompt_id] for r in rankings]
    gold = [labelers.gold_labeler_ranking(e, r.responses) for e, r in zip(ranked_examples, rankings)]
    per_labeler = {lab.name: [lab.rank(e, r.responses) for e, r in zip(ranked_examples, rankings)]
                   for lab in team}
    agreement = {name: labelers.pairwise_agreement(rankings, theirs)
                 for name, theirs in per_labeler.items()}
    others = list(per_labeler.values())
    with_each_other = _mean([labelers.pairwise_agreement(a, b)
                             for a, b in itertools.combinations(others, 2)])
    n_pairs = sum(1 for s, g in zip(rankings, gold)
                  for i, j in itertools.combinations(range(len(s.ranks)), 2)
                  if s.ranks[i] != s.ranks[j] and g.ranks[i] != g.ranks[j])
    return AgreementReport(
        n_rankings=len(rankings), n_pairs=n_pairs,
        gold=labelers.pairwise_agreement(rankings, gold), labelers=agreement,
        labelers_mean=_mean(agreement.values()), team_with_each_other=with_each_other,
        paper=labelers.PAPER_AGREEMENT)
