"""TRL 1.12's PPOTrainer on the course's artifacts, timed: the other side of ``ppo_speed.py --trl-venv``.

Runs with the python of a virtual environment that has TRL 1.12 (the last TRL with a
PPOTrainer, in ``trl.experimental.ppo``); it imports nothing from the course, so the two
environments never mix. ``benchmarks/ppo_speed.py`` writes the prompts (token ids of the
chat-rendered PPO prompts) to a JSON file and starts this script; it can also be run by hand:

    /tmp/trl112/bin/python benchmarks/trl_ppo_driver.py --sft artifacts/tiny/sft --rm artifacts/tiny/rm \
        --prompts prompts.json --out result.json --threads 1

The policy and the reference load from the SFT artifact, the value and reward models from the
RM artifact; batch 64, minibatch 16, 4 PPO epochs, 40 new tokens and the KL, clip and GAE
settings of the course's PPOConfig (the speed does not depend on them). Writes one JSON
object: seconds per iteration, split into generation, the rest of the rollout (log-probs of the
reference, values, GAE), reward-model scoring and the PPO update, measured by wrapping the
module functions PPOTrainer.train calls (``batch_generation``, ``forward``, ``get_reward``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, help="folder of the SFT artifact (policy and reference)")
    parser.add_argument("--rm", required=True, help="folder of the RM artifact (reward and value models)")
    parser.add_argument("--prompts", required=True, help="JSON list of prompt token-id lists (no padding)")
    parser.add_argument("--out", required=True, help="where to write the result (JSON)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--kl-coef", type=float, default=0.2)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    tokenizer = AutoTokenizer.from_pretrained(args.sft)
    tokenizer.padding_side = "left"  # PPOTrainer's rollout expects left-padded prompts
    prompts = json.loads(open(args.prompts).read())
    n_episodes = args.batch_size * args.iterations
    if len(prompts) < n_episodes:
        raise SystemExit(f"{len(prompts)} prompts for {n_episodes} episodes")
    dataset = Dataset.from_dict({"input_ids": prompts[:n_episodes]})

    policy = AutoModelForCausalLM.from_pretrained(args.sft)
    reference = AutoModelForCausalLM.from_pretrained(args.sft)
    value_model = AutoModelForSequenceClassification.from_pretrained(args.rm, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.rm, num_labels=1)

    output_dir = tempfile.mkdtemp(prefix="trl-ppo-speed-")
    config = PPOConfig(
        output_dir=output_dir, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=True, bf16=False, fp16=False, seed=args.seed, dataloader_num_workers=0,
        # one micro-batch per minibatch and one optimizer step per minibatch, as in the course's loop
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_mini_batches=args.batch_size // args.minibatch_size, local_rollout_forward_batch_size=args.batch_size,
        total_episodes=n_episodes, num_ppo_epochs=args.ppo_epochs, response_length=args.max_new_tokens,
        temperature=args.temperature, stop_token="eos", missing_eos_penalty=None, num_sample_generations=0,
        kl_coef=args.kl_coef, kl_estimator="k1", learning_rate=args.learning_rate, cliprange=0.2,
        cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95, whiten_rewards=False,
    )
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference,
                         reward_model=reward_model, value_model=value_model, train_dataset=dataset,
                         eval_dataset=dataset.select(range(min(8, len(dataset)))))

    # Timing: wrap the module-level functions train() calls; an iteration ends at on_step_end.
    seconds = {"generation": 0.0, "scoring": 0.0, "rollout_forward": 0.0}
    marks = {"iteration_start": None, "update_start": None}
    iterations: list[dict] = []
    response_widths: list[int] = []

    def timed(name, fn, *, pick=None):
        def wrapper(*a, **k):
            started = time.perf_counter()
            result = fn(*a, **k)
            key = pick(*a) if pick else name
            if key is not None:
                seconds[key] += time.perf_counter() - started
            return result
        return wrapper

    batch_generation, forward, get_reward = module.batch_generation, module.forward, module.get_reward

    def generation(*a, **k):
        result = timed("generation", batch_generation)(*a, **k)
        response_widths.append(int(result[0].shape[1] - a[1].shape[1]))
        return result

    def model_forward(model, *a, **k):
        if isinstance(model, module.PolicyAndValueWrapper):  # the update's forward pass
            if marks["update_start"] is None:
                marks["update_start"] = time.perf_counter()
            return forward(model, *a, **k)
        return timed("rollout_forward", forward)(model, *a, **k)

    module.batch_generation = generation
    module.forward = model_forward
    module.get_reward = timed(None, get_reward,
                              pick=lambda model, *a: "scoring" if model is trainer.reward_model else "rollout_forward")

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks["iteration_start"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            total = now - marks["iteration_start"]
            update = now - (marks["update_start"] or now)
            rollout = total - update
            iterations.append({
                "time_generation": seconds["generation"], "time_scoring": seconds["scoring"],
                # log-probs of the reference, values, and the rest of the rollout (GAE, whitening)
                "time_forward": rollout - seconds["generation"] - seconds["scoring"],
                "time_update": update, "seconds": total,
            })
            for key in seconds:
                seconds[key] = 0.0
            marks["iteration_start"], marks["update_start"] = now, None

    trainer.add_callback(Clock())
    cpu_started = time.process_time()
    trainer.train()
    cpu = time.process_time() - cpu_started

    result = {
        "name": f"TRL {trl.__version__} PPOTrainer",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "iterations": iterations,
        "cpu_seconds": cpu, "response_width": response_widths,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
