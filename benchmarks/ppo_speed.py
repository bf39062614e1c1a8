"""How fast PPO runs on the tiny profile: episodes and tokens per second, and where the time goes.

    python benchmarks/ppo_speed.py                 # the full-mode PPO settings, 4 iterations
    python benchmarks/ppo_speed.py --threads 1     # torch threads (default: torch's choice)
    python benchmarks/ppo_speed.py --fresh         # freshly built models even if artifacts exist

Uses the cached "sft" and "rm" artifacts when both exist (as found: it never trains them, that
takes minutes); otherwise a freshly built tiny GPT-2 of the course size stands in for both, which
never says EOS and so always writes max_new_tokens tokens: the slowest case. The output says
which models ran.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers import ppo, world  # noqa: E402
from helpers.config import settings  # noqa: E402

PARTS = [
    ("time_generation", "generation (sampling, KV cache)"),
    ("time_forward", "log-probs and values (policy, reference, value model)"),
    ("time_scoring", "reward model scoring"),
    ("time_update", "PPO update (epochs x minibatches, backward)"),
]


def load_models(fresh: bool):
    """(policy, reference, value model, reward model, tokenizer, description)."""
    from helpers import stages

    run = settings()
    infos = {name: stages.read_info(run.stage_dir(name)) for name in ("sft", "rm")}
    if all(infos.values()) and not fresh:
        # Loaded as found (a speed benchmark does not care whether the settings are current, and
        # must not start minutes of training).
        (sft, tokenizer), (rm, _) = [stages.get_stage(name).load_fn(run.stage_dir(name), info)
                                     for name, info in infos.items()]
        return (copy.deepcopy(sft), sft, ppo.value_model_from(rm), rm, tokenizer,
                f"the cached sft and rm artifacts in {run.stage_dir('sft').parent}")
    from helpers.models import build_causal_lm, count_parameters
    from helpers.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(world.pretraining_corpus(seed=0, n_docs=2000))
    torch.manual_seed(0)
    policy = build_causal_lm(tokenizer, "tiny").eval()
    reward_model = ppo.value_model_from_causal_lm(policy)
    with torch.no_grad():
        reward_model.score.weight.normal_(0, 0.02)
    return (policy, copy.deepcopy(policy), ppo.value_model_from(reward_model), reward_model, tokenizer,
            f"freshly built tiny GPT-2 ({count_parameters(policy) / 1e6:.2f}M parameters, untrained)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    policy, reference, value_model, reward_model, tokenizer, where = load_models(args.fresh)
    full = ppo.PPOConfig()
    config = ppo.PPOConfig(total_episodes=full.batch_size * args.iterations, reward_norm=False)
    prompts = world.prompts("ppo", seed=0, n=config.total_episodes)
    started, cpu_started = time.perf_counter(), time.process_time()
    history = ppo.train_ppo(policy, reference, value_model, reward_model, tokenizer, prompts, config,
                            progress=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    n = config.n_iterations
    per_iteration = {key: sum(history[key]) / n for key, _ in PARTS}
    iteration = sum(per_iteration.values())
    response_tokens = sum(history["response_length"]) / n * config.batch_size
    print(f"PPO speed: {where}; torch threads {torch.get_num_threads()}; "
          f"{n} iterations of {config.batch_size} episodes")
    print(f"settings: minibatch {config.minibatch_size}, {config.ppo_epochs} PPO epochs, "
          f"max_new_tokens {config.max_new_tokens}; mean response length "
          f"{sum(history['response_length']) / n:.1f} tokens, ended with EOS "
          f"{100 * sum(history['eos_share']) / n:.0f}%")
    print()
    print(f"| {'part':<56} | {'s / iteration':>13} | {'share':>6} |")
    print(f"|{'-' * 58}|{'-' * 15}|{'-' * 8}|")
    for key, label in PARTS:
        print(f"| {label:<56} | {per_iteration[key]:>13.2f} | {100 * per_iteration[key] / iteration:>5.0f}% |")
    print(f"| {'one iteration':<56} | {iteration:>13.2f} | {100:>5.0f}% |")
    print()
    print(f"episodes per second:           {config.batch_size / iteration:8.1f}")
    print(f"response tokens per second:    {response_tokens / iteration:8.1f}")
    print(f"full-mode run ({full.total_episodes} episodes, {full.n_iterations} iterations): "
          f"about {full.n_iterations * iteration / 60:.1f} min (+ reward normalization)")
    print(f"wall time of the loop {wall:.1f} s, CPU time {cpu:.1f} s ({cpu / wall:.2f} cores busy on "
          f"average; much less than the thread count means other processes were competing)")


if __name__ == "__main__":
    main()
