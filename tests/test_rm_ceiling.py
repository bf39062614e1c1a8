"""The RM ceiling analysis and the copy probe, on hand-built data: no training, no artifacts."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from helpers import comparisons, evaluation, labelers, reward, reward_diagnostics, world
from helpers.labelers import Ranking

REFUSAL = world.REFUSAL  # over-refusing an ordinary request scores 0


@pytest.fixture(scope="module")
def by_family():
    ones = {}
    for e in world.prompts("eval"):
        ones.setdefault(e.family, e)
    return ones


def ranking(example, responses, ranks):
    return Ranking(prompt_id=example.id, prompt=example.prompt, family=example.family,
                   responses=responses, ranks=ranks, labeler="test")


def scored_by_hand(rankings, rewards):
    """What ``reward.score_pairs`` returns, with the rewards given instead of a model's."""
    pairs, chosen, rejected = [], [], []
    for r, xs in zip(rankings, rewards):
        for w, l in r.pairs():
            pairs.append((r, w, l))
            chosen.append(xs[w])
            rejected.append(xs[l])
    return reward.ScoredPairs(pairs, torch.tensor(chosen), torch.tensor(rejected),
                              [torch.tensor(xs) for xs in rewards])


def test_hand_built_gold_scores(by_family):
    """The premises of the next test: the reference answer scores 1, padding costs a little,
    a short wrong answer earns only its brevity, a refusal or a new question scores 0."""
    e = by_family["arithmetic"]
    assert labelers.gold_score(e, e.response) == pytest.approx(1.0)
    assert 0 < labelers.gold_score(e, f"Sure! {e.response} I hope this helps.") < 1
    assert labelers.gold_score(e, "banana") == pytest.approx(labelers.WEIGHT_CONCISE)
    assert labelers.gold_score(e, "What is 12 plus 5?") == 0.0
    assert labelers.gold_score(e, REFUSAL) == 0.0
    assert labelers.gold_score(by_family["capital"], "banana") == pytest.approx(labelers.WEIGHT_CONCISE)
    assert labelers.gold_score(by_family["sort"], REFUSAL) == 0.0


def test_ceiling_analysis_by_hand(by_family):
    arithmetic, capital, sort = by_family["arithmetic"], by_family["capital"], by_family["sort"]
    padded = f"Sure! {arithmetic.response} I hope this helps."
    rankings = [
        # gold: reference 1 > padded 0.79 > refusal 0 = question 0. The labeler puts padded first.
        # Pairs (w, l): (1,0) gold disagrees, (0,2) (0,3) (1,2) (1,3) gold agrees, (2,3) gold tie.
        ranking(arithmetic, [arithmetic.response, padded, REFUSAL, "What is 12 plus 5?"], [2, 1, 3, 4]),
        # the labeler prefers a wrong answer to the right one: gold disagrees, not a tie
        ranking(capital, ["banana", capital.response], [1, 2]),
        # both worthless: a gold tie
        ranking(sort, [REFUSAL, "What is 12 plus 5?"], [1, 2]),
    ]
    rewards = [[0.5, 0.9, -1.0, -1.0],  # right on all labeler pairs but the tie (2,3): 5 of 6
               [0.2, 0.1],  # sides with the labeler, against gold
               [0.0, 0.3]]  # against the labeler on a tie
    scored = scored_by_hand(rankings, rewards)
    assert len(scored.pairs) == 8
    table = reward_diagnostics.ceiling_analysis(scored, {e.id: e for e in (arithmetic, capital, sort)})

    assert list(table.index) == ["arithmetic", "sort", "capital", "all"]  # world.FAMILIES order
    a, s, c, total = (table.loc[f] for f in ("arithmetic", "sort", "capital", "all"))
    assert a["pairs"] == 6 and s["pairs"] == 1 and c["pairs"] == 1 and total["pairs"] == 8
    assert a["gold_ties"] == pytest.approx(1 / 6)
    assert a["oracle"] == pytest.approx((0 + 1 + 1 + 1 + 1 + 0.5) / 6)
    assert a["rm"] == pytest.approx(5 / 6)
    assert a["rm_nontied"] == pytest.approx(1.0)
    assert a["rm_nontied_vs_gold"] == pytest.approx(4 / 5)

    assert (c["gold_ties"], c["oracle"], c["rm"], c["rm_nontied"], c["rm_nontied_vs_gold"]) == (0, 0, 1, 1, 0)

    assert (s["gold_ties"], s["oracle"], s["rm"]) == (1, 0.5, 0)
    assert math.isnan(s["rm_nontied"]) and math.isnan(s["rm_nontied_vs_gold"])  # no non-tied pairs

    assert total["gold_ties"] == pytest.approx(2 / 8)
    assert total["oracle"] == pytest.approx(5 / 8)
    assert total["rm"] == pytest.approx(6 / 8) == pytest.approx(scored.accuracy())
    assert total["rm_nontied"] == pytest.approx(6 / 6)
    assert total["rm_nontied_vs_gold"] == pytest.approx(4 / 6)


def test_ceiling_analysis_of_the_gold_labeler_itself(by_family):
    """Rankings made by the gold labeler: the oracle is right on every non-tied pair, and a
    gold tie never becomes a labeler pair (gold ranks tied answers equal)."""
    e = by_family["capital"]
    answers = [e.response, f"Sure! {e.response} I hope this helps.", REFUSAL, "What is 12 plus 5?"]
    gold = labelers.gold_labeler_ranking(e, answers)
    scores = [labelers.gold_score(e, x) for x in answers]
    table = reward_diagnostics.ceiling_analysis(scored_by_hand([gold], [scores]), {e.id: e})
    assert table.loc["all", "pairs"] == 5  # 6 pairs minus the tie of the two worthless answers
    assert table.loc["all", "gold_ties"] == 0
    assert table.loc["all", "oracle"] == 1.0
    assert table.loc["all", "rm"] == 1.0  # these "rewards" are the gold scores


def test_ceiling_analysis_without_pairs():
    empty = reward.ScoredPairs([], torch.zeros(0), torch.zeros(0), [])
    table = reward_diagnostics.ceiling_analysis(empty, {})
    assert list(table.index) == ["all"]
    assert table.loc["all", "pairs"] == 0
    assert table.loc[["all"], ["gold_ties", "oracle", "rm", "rm_nontied"]].isna().all().all()


# --------------------------------------------------------------------------------------------
# The copy probe, with a word-level tokenizer and two hand-made "language models"
# --------------------------------------------------------------------------------------------

NAMES = ["Ana", "Ben", "Cleo"]


class WordTokenizer:
    """Just enough of a tokenizer for ``copy_probe``: words and punctuation, ids made on demand."""

    pad_token_id = eos_token_id = 0
    eos_token = "<pad>"

    def __init__(self):
        self.vocab = {"<pad>": 0}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab))
                              for w in re.findall(r"<\w+>|\w+|[^\w\s]", text)]}

    def apply_chat_template(self, turns, tokenize=False, add_generation_prompt=True):
        reply = f" {turns[1]['content']}{self.eos_token}" if len(turns) > 1 else ""
        return f"<user> {turns[0]['content']} <assistant>{reply}"


class HandModel(torch.nn.Module):
    """Logits over a 100-word vocabulary: uniform, or (copy=True) +20 on the first name in the
    row, only where the input is the last word of a greeting ("...Hi" -> the name comes next)."""

    def __init__(self, tokenizer, copy):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.name_ids = {tokenizer(" " + n)["input_ids"][0] for n in NAMES}
        self.greeting_ends = {tokenizer(g)["input_ids"][-1] for _, g in evaluation.COPY_PROBE_GREETINGS}
        self.copy = copy

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, 100)
        if self.copy:
            for i, row in enumerate(input_ids.tolist()):
                first = next(t for t in row if t in self.name_ids)  # the name the prompt gave
                for t, token in enumerate(row):
                    if token in self.greeting_ends:
                        logits[i, t, first] = 20.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("chat", [True, False])
def test_copy_probe_tells_a_copying_model_from_a_uniform_one(chat):
    tokenizer = WordTokenizer()
    copying = evaluation.copy_probe(HandModel(tokenizer, copy=True), tokenizer, chat=chat, names=NAMES)
    assert copying["prompts"] == len(evaluation.COPY_PROBE_GREETINGS) * 2 * len(NAMES)
    assert copying["chance"] == pytest.approx(1 / 3)
    assert copying["p_name"] > 0.99 and copying["top1"] == 1.0
    assert copying["p_any_name"] == pytest.approx(copying["p_name"], abs=1e-6)

    uniform = evaluation.copy_probe(HandModel(tokenizer, copy=False), tokenizer, chat=chat, names=NAMES)
    assert uniform["p_name"] == pytest.approx(1 / 100)
    assert uniform["p_any_name"] == pytest.approx(3 / 100)
    assert uniform["top1"] == pytest.approx(1 / 3)  # ties go to the first name: right once in 3


def test_rank_with_team_shares_out_prompts_in_turn(by_family):
    """Labeler i % n ranks item i; each ranking keeps its prompt and answers; a clearly better
    answer (the reference against an over-refusal) comes first whatever the labeler's noise."""
    team = labelers.labeler_team(3, seed=0)
    examples = [by_family[f] for f in ("arithmetic", "capital", "sort", "reverse", "list")]
    items = [(e, [REFUSAL, e.response]) for e in examples]
    rankings = comparisons.rank_with_team(items, team)
    assert [r.labeler for r in rankings] == [team[i % 3].name for i in range(5)]
    assert [r.prompt_id for r in rankings] == [e.id for e in examples]
    assert all(r.responses == [REFUSAL, e.response] for r, e in zip(rankings, examples))
    assert all(r.ranks == [2, 1] for r in rankings)  # gold 0 against 1: noise of 0.125 cannot flip it
    assert all(r.pairs() == [(1, 0)] for r in rankings)


def test_rank_with_team_needs_a_labeler(by_family):
    with pytest.raises(ValueError, match="labeler_team"):
        comparisons.rank_with_team([(by_family["sort"], ["a", "b"])], [])


def test_difference_kind(by_family):
    e = by_family["sort"]
    padded = f"Sure! {e.response} I hope this helps."
    assert reward_diagnostics.difference_kind(e, e.response, padded) == "brevity only"
    assert reward_diagnostics.difference_kind(e, e.response, REFUSAL) == "correctness"
    assert reward_diagnostics.difference_kind(e, padded, "What is 12 plus 5?") == "correctness"
    assert reward_diagnostics.difference_kind(e, REFUSAL, "What is 12 plus 5?") == "gold tie"  # both 0
    assert reward_diagnostics.difference_kind(e, e.response, e.response) == "gold tie"


def test_accuracy_by_difference_by_hand(by_family):
    e = by_family["arithmetic"]
    padded = f"Sure! {e.response} I hope this helps."
    answers = [e.response, padded, REFUSAL, "What is 12 plus 5?"]
    # The labeler: padded > reference > refusal > question. Pairs (w, l): (1,0) brevity, against
    # gold; (1,2) (1,3) (0,2) (0,3) correctness, with gold; (2,3) a gold tie.
    first = ranking(e, answers, [2, 1, 3, 4])
    rewards = [[0.9, 0.5, 0.2, -1.0]]  # right on (0,2) (0,3) (1,2) (1,3) (2,3); wrong on (1,0)
    second = ranking(e, answers, [1, 2, 4, 3])  # agrees on the four correctness pairs only
    table = reward_diagnostics.accuracy_by_difference(scored_by_hand([first], rewards), {e.id: e}, {e.id: second})
    assert list(table.index) == ["brevity only", "correctness", "gold tie"]
    assert table["pairs"].tolist() == [1, 4, 1]
    assert table.loc["brevity only", ["rm", "gold", "second_labeler"]].tolist() == [0, 0, 0]
    assert table.loc["correctness", ["rm", "gold", "second_labeler"]].tolist() == [1, 1, 1]
    assert table.loc["gold tie", ["rm", "gold", "second_labeler"]].tolist() == [1, 0, 0]
    without = reward_diagnostics.accuracy_by_difference(scored_by_hand([first], rewards), {e.id: e})
    assert "second_labeler" not in without.columns


def test_rank_with_team_start_gives_each_prompt_the_next_labeler(by_family):
    team = labelers.labeler_team(3, seed=0)
    items = [(by_family[f], [REFUSAL, by_family[f].response]) for f in ("sort", "reverse", "list", "capital")]
    second = comparisons.rank_with_team(items, team, start=1)
    assert [r.labeler for r in second] == [team[(1 + i) % 3].name for i in range(4)]
