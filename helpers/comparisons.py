"""The comparison data: K answers per prompt from the SFT model, ranked by labelers.

InstructGPT's reward model learns from rankings: for each prompt, labelers ordered K answers of
the SFT model, sampled at temperature 1 so they differ. The "comparisons" stage collects them
with the simulated labelers of ``helpers.labelers``, one labeler per prompt as in the paper,
and keeps the rankings of held-out prompts apart for the reward model's test. It also measures
the ceiling a reward model faces: how often a second labeler orders the same answers as the
first.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import course_data, generation, labelers
from helpers.profiles import K
from helpers.rankings import Ranking, read_rankings

TRAIN_FILE = "rankings_train.jsonl"
HELDOUT_FILE = "rankings_heldout.jsonl"


def sample_for_ranking(model, tokenizer, examples, k: int = K, temperature: float = 1.0,
                       max_new_tokens: int = 48, seed: int = 0, progress: bool = True):
    """K responses per prompt, sampled at temperature 1 as in the paper: (example, responses)."""
    prompts = [e.prompt for e in examples for _ in range(k)]
    texts = generation.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, progress=progress)
    return [(e, texts[i * k:(i + 1) * k]) for i, e in enumerate(examples)]


def rank_with_team(items, team, start: int = 0) -> list[Ranking]:
    """Rankings of ``items`` ((example, responses) pairs, as ``sample_for_ranking`` returns),
    shared out in turn: labeler ``(start + i) % len(team)`` ranks item ``i``, one labeler per
    prompt. ``start=1`` gives every prompt a second opinion from the next labeler."""
    if not team:
        raise ValueError("rank_with_team needs at least one labeler (labelers.labeler_team())")
    return [team[(start + i) % len(team)].rank(e, responses) for i, (e, responses) in enumerate(items)]


def _write(path: Path, rankings: list[Ranking]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rankings:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def collect(model, tokenizer, examples: list, config: dict, out_dir: Path) -> dict:
    """The comparisons stage's work: sample ``config["k"]`` answers of ``model`` (the SFT model)
    to each of ``examples`` (``n_prompts`` to train on, then ``heldout_prompts``), have the
    simulated labelers rank them, write the two sets of rankings into ``out_dir`` and return how
    many there are and how far labelers agree (with each other, and with the gold labeler) on the
    held-out ones."""
    items = sample_for_ranking(model, tokenizer, examples, config["k"], config["temperature"],
                               config["max_new_tokens"], config["seed"])
    noise = labelers.CALIBRATED_NOISE  # in the rubric's units (the Instruction World)
    if config.get("calibrate_noise"):
        # A gold reward model scores on its own scale: fit the noise to its scores of the very
        # answers to be ranked, so two labelers agree as often as the paper's did.
        flat = labelers.gold_scores([e for e, rs in items for _ in rs], [r for _, rs in items for r in rs])
        k = config["k"]
        noise = labelers.calibrate_noise_to_scores([flat[i:i + k] for i in range(0, len(flat), k)],
                                                   seed=config["seed"])
    team = labelers.labeler_team(config["n_labelers"], seed=config["seed"], noise=noise)
    rankings = rank_with_team(items, team)
    train, held = rankings[:config["n_prompts"]], rankings[config["n_prompts"]:]
    _write(out_dir / TRAIN_FILE, train)
    _write(out_dir / HELDOUT_FILE, held)
    # How often a second labeler agrees with the one who ranked: the ceiling for an RM.
    examples_held = [e for e, _ in items[config["n_prompts"]:]]
    second = rank_with_team([(e, r.responses) for e, r in zip(examples_held, held)], team, start=1)
    return {"rankings": len(train), "heldout_rankings": len(held),
            "pairs": sum(len(r.pairs()) for r in train), "labeler_noise": noise,
            "labeler_agreement": labelers.pairwise_agreement(held, second),
            "gold_agreement": labelers.pairwise_agreement(
                held, [labelers.gold_labeler_ranking(e, r.responses)
                       for e, r in zip(examples_held, held)])}


def comparison_examples(artifact) -> dict:
    """The Examples behind a "comparisons" artifact's rankings, by prompt id (the gold labeler
    needs an example's facts to grade a response)."""
    config = artifact.info["settings"]
    examples = course_data.source(config.get("profile")).prompts(
        "rm", seed=config["seed"], n=config["n_prompts"] + config["heldout_prompts"])
    return {e.id: e for e in examples}


def load_comparisons(artifact) -> tuple[list[Ranking], list[Ranking]]:
    """(training rankings, held-out rankings) of a "comparisons" artifact."""
    train, _ = read_rankings(artifact.path / TRAIN_FILE, strict=True)
    held, _ = read_rankings(artifact.path / HELDOUT_FILE, strict=True)
    return train, held
