"""Can a base model copy from its context? Three probes, one row per model.

    python benchmarks/base_copying.py                        # the "base" and "base_big" stages
    python benchmarks/base_copying.py --models base path/to/saved_model

Most Instruction World tasks (extract a fact, reverse or sort words, greet the user by name,
shorten a sentence, answer about the country named in the question) need the model to copy
tokens from the prompt. A transformer learns that with "induction heads": attention that finds
an earlier occurrence of the current token and predicts what followed it.

1. Repeated list. A random list of 10 of the world's words, written twice. A model that copies
   predicts the second copy far better than the first (loss per token falls); a model that
   cannot finds both equally surprising.
2. A name, as notebook 04 asks (``evaluation.copy_probe``, web Q&A form): "My name is Finn." ->
   "Hi" + which name? The share of prompts where the given name is the likeliest, against
   chance (1 / the number of names).
3. Question page. Evaluation prompts of the families that need copying, in the format of the
   pretraining corpus's question-and-answer pages ("Question: ...\\nAnswer:"), answered greedily;
   the share the gold labeler grades correct, per family.

The table tells whether pretraining gave the model this skill: without it, fine-tuning and RL
have little to work with on those families.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers import evaluation, generation, labelers, world  # noqa: E402
from helpers.pipeline import load_lm, load_or_train  # noqa: E402

COPY_FAMILIES = ("capital", "chat", "extract", "reverse", "sort", "shorten", "sentiment")


def repeated_list_losses(model, tokenizer, n_lists: int = 40, length: int = 10, seed: int = 0):
    """Mean loss per token (nats) on the first and on the second copy of repeated word lists."""
    rng = random.Random(seed)
    first = second = 0.0
    device = next(model.parameters()).device
    for _ in range(n_lists):
        ids = tokenizer(" ".join(rng.sample(world.CATEGORY_WORDS, length)) + ".")["input_ids"]
        batch = torch.tensor([ids + ids], device=device)
        with torch.no_grad():
            logits = model(batch).logits[0, :-1]
        losses = torch.nn.functional.cross_entropy(logits.float(), batch[0, 1:], reduction="none")
        first += losses[: len(ids) - 1].mean().item() / n_lists
        second += losses[len(ids):].mean().item() / n_lists
    return first, second


def question_page_accuracy(model, tokenizer) -> dict[str, float]:
    """Share of evaluation prompts answered correctly in the corpus's Q&A-page format, per family."""
    examples = [e for e in world.prompts("eval") if e.family in COPY_FAMILIES]
    texts = [evaluation.few_shot_prompt(e.prompt, shots=[]) for e in examples]
    replies = generation.generate(model, tokenizer, texts, temperature=0.0, max_new_tokens=24,
                                  chat=False, progress=False)
    correct = collections.defaultdict(list)
    for example, reply in zip(examples, replies):
        answer = evaluation.few_shot_answer(reply)  # the first line; the page goes on with "Question:"
        correct[example.family].append(labelers.gold_grade(example, answer).correct)
    return {family: sum(v) / len(v) for family, v in sorted(correct.items())}


def load(name: str):
    if Path(name).is_dir():
        return load_lm(Path(name), {})
    artifact = load_or_train(name)
    return artifact.model, artifact.tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["base", "base_big"],
                        help="stage names or folders saved with save_pretrained")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        model, tokenizer = load(name)
        model.eval()
        first, second = repeated_list_losses(model, tokenizer)
        names = evaluation.copy_probe(model, tokenizer, chat=False)
        row = {"model": name, "loss 1st copy": first, "loss 2nd copy": second,
               "name likeliest": names["top1"], "chance": names["chance"]}
        row.update(question_page_accuracy(model, tokenizer))
        rows.append(row)

    import pandas as pd

    table = pd.DataFrame(rows).set_index("model")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda x: f"{x:.2f}"))
    print("\nloss columns: nats per token on a repeated word list (a model that copies does much "
          "better on the 2nd copy);\nname likeliest: share of prompts where the name given is the "
          "likeliest next word (against chance);\nfamily columns: share correct in the Q&A-page format.")


if __name__ == "__main__":
    main()
