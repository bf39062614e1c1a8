"""What PPO can get out of each reward: the learned reward model, the gold labeler, no KL penalty.

    python benchmarks/ppo_rewards.py                       # the three standard runs (about 8 min)
    python benchmarks/ppo_rewards.py --runs rm gold        # some of them
    python benchmarks/ppo_rewards.py --set learning_rate=1e-4 --set kl_coef=0.1

Every run starts from the "sft" model (and "rm" reward model) of `load_or_train`, cached after
the course has run (trained first otherwise), trains PPO with the "ppo"
stage's full-mode settings plus the run's changes, then answers the held-out evaluation
prompts greedily. The table gives the gold labeler's win rate over SFT with its 95% bootstrap interval,
the mean gold score, the final KL to SFT and the reward the run optimized, first and last sixth.

"PPO against the gold labeler" is the upper bound of the pipeline: the reward model replaced by
the rubric it tries to learn. If even that run stays far from a target, the reward model is not
what holds PPO back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import evaluation, generation, labelers, pipeline, ppo, world  # noqa: E402
from helpers.config import settings  # noqa: E402
from helpers.pipeline import load_or_train  # noqa: E402

RUNS = {
    "rm": ("the reward model, beta = stage default", {}, False),
    "gold": ("the gold labeler instead of the RM", {}, True),
    "no-kl": ("the reward model, beta = 0", {"kl_coef": 0.0}, False),
}


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def greedy_answers(model, tokenizer, examples) -> list[str]:
    return generation.generate(model, tokenizer, [e.prompt for e in examples], temperature=0.0,
                               max_new_tokens=48, progress=False)


def run(name: str, changes: dict, sft, rm, eval_set, sft_gold: list[float]) -> dict:
    label, run_changes, use_gold = RUNS[name]
    models = ppo.prepare_models(sft, rm)
    stage_settings = {**pipeline.settings("ppo"), **run_changes, **changes}
    config, prompts = pipeline.ppo_config_and_prompts(stage_settings)
    started = time.perf_counter()
    history = ppo.train_ppo(models, prompts, config, progress=True, gold_fn=labelers.gold_scores,
                            reward_fn=ppo.gold_reward if use_gold else None)
    seconds = time.perf_counter() - started
    answers = greedy_answers(models.policy, sft.tokenizer, eval_set)
    gold = [labelers.gold_score(e, a) for e, a in zip(eval_set, answers)]
    rate, low, high = evaluation.win_rate(gold, sft_gold)
    sixth = max(1, len(history["score"]) // 6)
    return {"run": name, "reward": label, "lr": f"{config.learning_rate:g}", "beta": config.kl_coef,
            "win vs SFT": f"{rate:.1%} [{low:.1%}, {high:.1%}]", "gold": sum(gold) / len(gold),
            "KL end": sum(history["kl"][-sixth:]) / sixth,
            "reward first/last": f"{sum(history['score'][:sixth]) / sixth:.2f} -> "
                                 f"{sum(history['score'][-sixth:]) / sixth:.2f}",
            "seconds": round(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a PPOConfig setting in every run, e.g. learning_rate=1e-4")
    args = parser.parse_args()
    changes = {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set wants NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in ppo.PPOConfig.__dataclass_fields__:
            parser.error(f"{key!r} is not a PPOConfig setting")
        changes[key] = parse_value(value)

    if settings().fast:
        print("COURSE_FAST is set: the numbers below come from smoke-test models and mean nothing.")
    sft, rm = load_or_train("sft"), load_or_train("rm")
    eval_set = world.prompts("eval")
    sft_gold = [labelers.gold_score(e, a) for e, a in zip(eval_set, greedy_answers(sft.model, sft.tokenizer, eval_set))]
    print(f"SFT: mean gold score {sum(sft_gold) / len(sft_gold):.3f} on {len(eval_set)} evaluation prompts; "
          f"reward model pooling: {getattr(rm.model.config, 'reward_pooling', 'last')}")
    rows = [run(name, changes, sft, rm, eval_set, sft_gold) for name in args.runs]

    import pandas as pd

    table = pd.DataFrame(rows).set_index("run")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
