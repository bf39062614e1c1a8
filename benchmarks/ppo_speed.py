"""How fast PPO runs on the tiny profile: episodes per second and where the time goes, beside TRL's.

    python benchmarks/ppo_speed.py                            # the course's PPO, full-mode settings
    python benchmarks/ppo_speed.py --trl-venv /tmp/trl112     # ... side by side with TRL 1.12's PPOTrainer
    python benchmarks/ppo_speed.py --threads 2 --rounds 3     # torch threads (both sides), pairs of runs

Both sides run on the same cached "sft" and "rm" artifacts (policy and reference from SFT, value
and reward models from the RM), the same prompts, a rollout batch of 64, minibatches of 16, 4 PPO
epochs, up to 40 new tokens at temperature 1, and the same number of torch threads (default 1).
Every run is a fresh process; with ``--trl-venv`` the runs alternate (ours, TRL, ours, TRL, ...)
so that a busy machine slows both sides alike: the ratio of each pair is the number to read.

TRL 1.12 is the last TRL with a PPOTrainer; it runs from its own virtual environment through
``benchmarks/trl_ppo_driver.py``. To make one (torch 2.13.0 as in the course; a CPU wheel):

    python -m venv /tmp/trl112
    /tmp/trl112/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.25.0 accelerate

Without the artifacts (and with ``--fresh``) our side runs on a freshly built tiny model that
never says EOS and so always writes 40 tokens: the slowest case; TRL is then not run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = [
    ("time_generation", "generation (sampling, KV cache)"),
    ("time_forward", "rest of the rollout (log-probs, values)"),
    ("time_scoring", "reward model scoring"),
    ("time_update", "PPO update (epochs x minibatches)"),
]


def artifact_dirs():
    """The sft and rm artifact folders if both exist, else None."""
    from helpers import stages
    from helpers.config import settings

    run = settings()
    dirs = {name: run.stage_dir(name) for name in ("sft", "rm")}
    return dirs if all(stages.read_info(d) for d in dirs.values()) else None


# --------------------------------------------------------------------------------------------
# One run of the course's PPO (in a fresh process: python ppo_speed.py --worker OUT)
# --------------------------------------------------------------------------------------------


def load_models(fresh: bool):
    """(policy, reference, value model, reward model, tokenizer, description)."""
    import copy

    import torch

    from helpers import pipeline, ppo, stages, world
    from helpers.config import settings

    run = settings()
    dirs = None if fresh else artifact_dirs()
    if dirs:
        # Loaded as found (a speed benchmark does not care whether the settings are current, and
        # must not start minutes of training).
        (sft, tokenizer), (rm, _) = [pipeline.get_stage(name).load_fn(d, stages.read_info(d)) for name, d in dirs.items()]
        return (copy.deepcopy(sft), sft, ppo.value_model_from(rm), rm, tokenizer,
                f"the cached sft and rm artifacts in {run.stage_dir('sft').parent}")
    from helpers.models import build_causal_lm, count_parameters, value_model_from_causal_lm
    from helpers.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(world.pretraining_corpus(seed=0, n_docs=2000))
    torch.manual_seed(0)
    policy = build_causal_lm(tokenizer, "tiny").eval()
    reward_model = value_model_from_causal_lm(policy)
    with torch.no_grad():
        reward_model.score.weight.normal_(0, 0.02)
    return (policy, copy.deepcopy(policy), ppo.value_model_from(reward_model), reward_model, tokenizer,
            f"a freshly built tiny model ({count_parameters(policy) / 1e6:.2f}M parameters, untrained)")


def run_ours(out: str, iterations: int, threads: int, fresh: bool) -> None:
    import torch

    from helpers import ppo, world

    torch.set_num_threads(threads)
    policy, reference, value_model, reward_model, tokenizer, where = load_models(fresh)
    full = ppo.PPOConfig()
    config = ppo.PPOConfig(total_episodes=full.batch_size * iterations, reward_norm=False)
    prompts = world.prompts("ppo", seed=0, n=config.total_episodes)
    seconds: list[float] = []
    clock = [time.perf_counter()]

    def lap(iteration, stats):
        now = time.perf_counter()
        seconds.append(now - clock[0])
        clock[0] = now

    cpu_started = time.process_time()
    clock[0] = time.perf_counter()
    models = ppo.PPOModels(policy=policy, reference=reference, value_model=value_model,
                           reward_model=reward_model, tokenizer=tokenizer)
    history = ppo.train_ppo(models, prompts, config, callback=lap, progress=False)
    cpu = time.process_time() - cpu_started
    n = config.n_iterations
    result = {
        "name": "ours (helpers/ppo.py)", "models": where, "threads": torch.get_num_threads(),
        "batch_size": config.batch_size, "cpu_seconds": cpu,
        "iterations": [{**{key: history[key][i] for key, _ in PARTS}, "seconds": seconds[i]} for i in range(n)],
        "response_length": sum(history["response_length"]) / n,
        "eos_share": sum(history["eos_share"]) / n,
        "settings": {"minibatch": config.minibatch_size, "epochs": config.ppo_epochs,
                     "max_new_tokens": config.max_new_tokens, "temperature": config.temperature},
    }
    Path(out).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def write_prompts(path: Path, sft_dir: Path, n: int) -> None:
    """Token ids of the same chat-rendered prompts our side samples from, for the TRL driver."""
    from transformers import AutoTokenizer

    from helpers import world
    from helpers.tokenizer import render_chat

    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    texts = [render_chat(e.prompt, tokenizer=tokenizer) for e in world.prompts("ppo", seed=0, n=n)]
    path.write_text(json.dumps(tokenizer(texts, add_special_tokens=False)["input_ids"]))


def summary(result: dict) -> dict:
    """Episodes per second (wall and CPU) and seconds per iteration of each part."""
    its = result["iterations"]
    wall = sum(i["seconds"] for i in its)
    parts = {key: sum(i[key] for i in its) / len(its) for key, _ in PARTS}
    parts["other"] = wall / len(its) - sum(parts.values())  # GAE, diagnostics, logging
    episodes = result["batch_size"] * len(its)
    return {"eps": episodes / wall, "eps_cpu": episodes / result["cpu_seconds"],
            "busy": result["cpu_seconds"] / wall, "iteration": wall / len(its), **parts}


def run(command: list[str], env: dict) -> None:
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:])
        raise SystemExit(f"failed: {' '.join(command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations of 64 episodes per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1)")
    parser.add_argument("--trl-venv", help="a virtual environment with TRL 1.12: run its PPOTrainer too")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating (default 2)")
    parser.add_argument("--fresh", action="store_true", help="a fresh untrained model for our side (no TRL)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_ours(args.worker, args.iterations, args.threads, args.fresh)

    dirs = None if args.fresh else artifact_dirs()
    if args.trl_venv and not dirs:
        raise SystemExit("--trl-venv needs the sft and rm artifacts (python -c \"from helpers.pipeline import "
                         "load_or_train; load_or_train('rm')\")")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="ppo-speed-"))
    sides = {"ours": []}
    if args.trl_venv:
        sides["trl"] = []
        write_prompts(work / "prompts.json", dirs["sft"], 64 * args.iterations)
        python = str(Path(args.trl_venv) / "bin" / "python")
    for round_ in range(args.rounds):
        out = work / f"ours{round_}.json"
        print(f"round {round_ + 1}/{args.rounds}: ours ...", flush=True)
        run([sys.executable, __file__, "--worker", str(out), "--iterations", str(args.iterations),
             "--threads", str(args.threads)] + (["--fresh"] if args.fresh else []), env)
        sides["ours"].append(json.loads(out.read_text()))
        if args.trl_venv:
            out = work / f"trl{round_}.json"
            print(f"round {round_ + 1}/{args.rounds}: TRL ...", flush=True)
            run([python, str(ROOT / "benchmarks" / "trl_ppo_driver.py"), "--sft", str(dirs["sft"]),
                 "--rm", str(dirs["rm"]), "--prompts", str(work / "prompts.json"), "--out", str(out),
                 "--iterations", str(args.iterations), "--threads", str(args.threads)], env)
            sides["trl"].append(json.loads(out.read_text()))

    ours = sides["ours"][0]
    print()
    print(f"PPO speed: {ours['models']}; torch threads {ours['threads']}; {args.rounds} run(s) per side of "
          f"{args.iterations} iterations x {ours['batch_size']} episodes")
    s = ours["settings"]
    print(f"settings: minibatch {s['minibatch']}, {s['epochs']} PPO epochs, max_new_tokens {s['max_new_tokens']}, "
          f"temperature {s['temperature']}; our mean response length "
          f"{statistics.mean(r['response_length'] for r in sides['ours']):.1f} tokens, ended with EOS "
          f"{100 * statistics.mean(r['eos_share'] for r in sides['ours']):.0f}%")
    if "trl" in sides:
        t = sides["trl"][0]
        print(f"TRL: {t['name']} (transformers {t['versions']['transformers']}, torch {t['versions']['torch']}); "
              f"its rollouts were {statistics.mean(w for r in sides['trl'] for w in r['response_width']):.0f} "
              f"columns wide on average (ours: the longest response of the batch)")
    print()
    names = {"ours": "ours", "trl": "TRL 1.12"}
    per_run = {side: [summary(r) for r in results] for side, results in sides.items()}
    mean = {side: {k: statistics.mean(run_[k] for run_ in runs) for k in runs[0]} for side, runs in per_run.items()}
    header = "| " + f"{'seconds per iteration':<40}" + "".join(f" | {names[s]:>9}" for s in sides) + " |"
    print(header)
    print("|" + "-" * 42 + "".join("|" + "-" * 11 for _ in sides) + "|")
    for key, label in PARTS + [("other", "other (GAE, diagnostics, logging)"), ("iteration", "one iteration")]:
        print(f"| {label:<40}" + "".join(f" | {mean[s][key]:>9.2f}" for s in sides) + " |")
    print(f"| {'episodes per second (wall)':<40}" + "".join(f" | {mean[s]['eps']:>9.1f}" for s in sides) + " |")
    print(f"| {'episodes per CPU second':<40}" + "".join(f" | {mean[s]['eps_cpu']:>9.1f}" for s in sides) + " |")
    print(f"| {'cores busy (CPU time / wall time)':<40}" + "".join(f" | {mean[s]['busy']:>9.2f}" for s in sides) + " |")
    print()
    if "trl" in sides:
        pairs = [(o["eps"] / t["eps"], o["eps_cpu"] / t["eps_cpu"]) for o, t in zip(per_run["ours"], per_run["trl"])]
        for i, (wall, cpu) in enumerate(pairs):
            o, t = per_run["ours"][i]["eps"], per_run["trl"][i]["eps"]
            print(f"pair {i + 1}: ours {o:.1f} vs TRL {t:.1f} episodes/s: ours {wall:.2f}x TRL's speed "
                  f"(by CPU time {cpu:.2f}x)")
        print(f"ours / TRL, median over the pairs: {statistics.median(p[0] for p in pairs):.2f}x by wall time, "
              f"{statistics.median(p[1] for p in pairs):.2f}x by CPU time")
    else:
        full = mean["ours"]["iteration"] * 3072 / ours["batch_size"]
        print(f"episodes per second: {mean['ours']['eps']:.1f}; a full-mode run (3072 episodes) takes about "
              f"{full / 60:.1f} min (+ reward normalization)")
    busy = min(m["busy"] for m in mean.values())
    if busy < 0.9 * args.threads:
        print(f"Note: the runs got {busy:.2f} cores of CPU for {args.threads} thread(s): the machine was shared, "
              f"so absolute timings are noisy; the ratios of the alternating pairs and the CPU-time rates hold "
              f"up better.")
    else:
        print(f"The runs had their {args.threads} thread(s) of CPU (cores busy {busy:.2f}). On a shared machine, "
              f"read the ratios of the alternating pairs rather than absolute timings.")


if __name__ == "__main__":
    main()
