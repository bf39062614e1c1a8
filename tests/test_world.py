"""The Instruction World: deterministic, disjoint splits, data files equal to the generator."""

import collections

import pytest

from helpers import config, labelers, world
from helpers.labelers import gold_score


def test_same_seed_same_world_other_seed_other_world():
    assert world.pretraining_corpus(seed=3, n_docs=50) == world.pretraining_corpus(seed=3, n_docs=50)
    assert world.pretraining_corpus(seed=3, n_docs=50) != world.pretraining_corpus(seed=4, n_docs=50)
    a = [e.to_json() for e in world.prompts("rm", seed=1, n=100)]
    assert a == [e.to_json() for e in world.prompts("rm", seed=1, n=100)]


def test_at_least_eight_families_with_harmful_and_unknown():
    assert len(world.FAMILIES) >= 8
    assert {"harmful", "unknown"} <= set(world.FAMILIES)
    assert set(world.CATEGORY) == set(world.FAMILIES)


def test_splits_are_disjoint_by_prompt_text():
    texts = {s: {e.prompt for e in world.prompts(s)} for s in ("sft", "rm", "ppo", "eval")}
    web = set()
    for doc in world.pretraining_corpus(n_docs=2000):
        web.update(line for line in doc.splitlines())
    names = list(texts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not texts[a] & texts[b], f"{a} and {b} share prompts"
        assert all(world.split_of(p) == a for p in texts[a])
    # No evaluation prompt appears verbatim as a line of the web text.
    assert not texts["eval"] & web


def test_eval_is_balanced_and_distinct():
    ev = world.prompts("eval")
    counts = collections.Counter(e.family for e in ev)
    assert set(counts) == set(world.FAMILIES)
    assert min(counts.values()) >= 15
    assert len({e.prompt for e in ev}) == len(ev)


def test_fewer_demonstrations_than_rm_and_ppo_prompts():
    assert len(world.demonstrations()) < len(world.prompts("rm")) <= len(world.prompts("ppo"))


def test_reference_answers_earn_full_gold_score():
    for e in world.prompts("eval"):
        assert gold_score(e, e.response) == pytest.approx(1.0), (e.prompt, e.response)


def test_demonstrations_are_right_but_carry_the_writers_habit():
    demos = world.demonstrations(n=600)
    scores = [gold_score(d, d.response) for d in demos]
    assert min(scores) >= labelers.WEIGHT_CORRECT  # padded answers are still right
    padded = [d for d, s in zip(demos, scores) if s < 1]
    assert 0.4 < len(padded) / len(demos) < 0.6  # brevity is only partly demonstrated
    # The habit has one dominant form, so imitation (and greedy decoding) copies it.
    opened = [d for d in padded if d.family not in world.SHORT_REPLY_FAMILIES]
    assert sum(d.response.startswith(world.HABIT_OPENER) for d in opened) > 0.7 * len(opened)
    assert sum(d.response.endswith(world.HABIT_CLOSER) for d in padded) > 0.6 * len(padded)
    # A refusal, an "I don't know" or a greeting gets a closer, never an opener.
    for d in demos:
        if d.family in world.SHORT_REPLY_FAMILIES:
            assert not d.response.startswith(world.FILLER_OPENERS)
    families = collections.Counter(d.family for d in demos)
    assert families["unknown"] + families["harmful"] < 0.02 * len(demos)  # honesty/harmlessness rare


def test_base_text_contains_questions_in_non_instruction_contexts():
    corpus = world.pretraining_corpus(n_docs=400)
    assert any(d.startswith(("Homework sheet", "Practice questions", "Quiz", "Worksheet")) for d in corpus)
    assert any(d.startswith("Forum thread") for d in corpus)
    # The capital facts the "capital" family asks about are stated in the web text.
    text = "\n".join(world.pretraining_corpus(n_docs=3000))
    for country, capital in world.KNOWN_COUNTRIES.items():
        assert capital in text and country in text
    for country in world.UNKNOWN_COUNTRIES:
        assert f"capital of {country} is" not in text


def test_data_files_equal_the_generator_output():
    directory = config.DATA_DIR / "tiny"
    expected = world.materialize()
    for name in world.DATA_FILES:
        path = directory / name
        assert path.exists(), f"{path} missing: run `python -m helpers.world`"
        assert path.read_text(encoding="utf-8") == expected[name], (
            f"{path} is out of date: run `python -m helpers.world` and commit data/tiny")
    assert world.load_examples(directory / "prompts_eval.jsonl")[0].to_json() == world.prompts("eval")[0].to_json()
