"""The gpu profile, offline: every stage and notebook on a fake hub cache (tests/fake_hub.py).

The fake holds tiny models of SmolLM2's and the gold reward model's architectures and tokenizer
types, in bfloat16 as the real checkpoints are, and small files in the real datasets' schemas,
under the real repo ids. What it cannot tell: speed, memory and whether the real models learn;
``benchmarks/gpu_smoke.py`` on a GPU tells those (see the README's gpu section).

Each check runs in a fresh Python process: huggingface_hub reads HF_HUB_OFFLINE and the cache
folder once, when it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def gpu_env(fake_hub, tmp_path_factory) -> dict:
    """This process's environment with the fake hub, the gpu profile and fast mode, and one
    artifact folder for the whole module (later checks reuse the stages earlier ones trained)."""
    env = {**os.environ, **fake_hub, "COURSE_PROFILE": "gpu", "COURSE_FAST": "1",
           "COURSE_ARTIFACTS": str(tmp_path_factory.mktemp("gpu-artifacts")), "OMP_NUM_THREADS": "1"}
    for name in ("COURSE_HUB_BASE", "COURSE_HUB_BASE_BIG", "COURSE_HUB_GOLD_RM", "COURSE_HUB_DEMONSTRATIONS",
                 "COURSE_HUB_HELDOUT_TEXT", "COURSE_PREPARED_ARTIFACTS"):
        env.pop(name, None)
    return env


def run_python(code: str, env: dict, timeout: int = 600) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line starting with RESULT."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_every_stage_trains_from_hub_models_and_data(gpu_env):
    result = run_python("""
        import json, math
        from helpers import hub_data
        from helpers.pipeline import load_or_train
        out = {}
        for stage in ("tokenizer", "base", "sft", "comparisons", "rm", "ppo", "ppo_ptx", "base_big", "sft_big"):
            artifact = load_or_train(stage)
            dtype = str(next(artifact.model.parameters()).dtype) if artifact.model is not None else None
            out[stage] = {"metrics": artifact.info["metrics"], "dtype": dtype}
        from helpers import comparisons
        train, held = comparisons.load_comparisons(load_or_train("comparisons"))
        rm_prompts = {e.prompt for e in hub_data.prompts("rm")}
        out["ranked_hub_prompts"] = all(r.prompt in rm_prompts for r in train + held)
        print("RESULT " + json.dumps(out))
    """, gpu_env)
    for stage in ("base", "sft", "rm", "ppo", "ppo_ptx", "base_big", "sft_big"):
        assert result[stage]["dtype"] == "torch.float32", (stage, result[stage])  # never the checkpoint's bf16
    assert 0 < result["base"]["metrics"]["heldout_loss"] < 20  # measured on the held-out web text
    assert result["ranked_hub_prompts"]  # the rankings are of no_robots prompts, not the world's
    ranked = result["comparisons"]["metrics"]
    assert ranked["labeler_noise"] > 0 and 0.5 < ranked["labeler_agreement"] <= 1
    assert result["tokenizer"]["metrics"]["tokens_added"] >= 2  # the course's chat tokens


def test_one_step_at_each_stages_learning_rate_changes_the_weights(gpu_env):
    """The bfloat16 trap: at the gpu profile's learning rates most bfloat16 updates round away.
    The models the stages train are float32, so one step changes every weight."""
    result = run_python("""
        import json, torch
        from transformers import AutoModelForCausalLM
        from helpers import pipeline
        from helpers.models import load_causal_lm, load_reward_model
        base = pipeline.load_or_train("base")
        rates = {"sft": pipeline.settings("sft")["learning_rate"], "rm": pipeline.settings("rm")["learning_rate"],
                 "ppo": pipeline.settings("ppo")["learning_rate"]}

        def changed_share(model, lr):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
            ids = torch.randint(3, 500, (4, 24), generator=torch.Generator().manual_seed(0))
            out = model(input_ids=ids)
            out.logits.float().pow(2).mean().backward()
            optimizer.step()
            changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters() if p.grad is not None)
            return changed / sum(p.numel() for p in model.parameters() if p.grad is not None)

        out = {"as_trained": {}, "as_checkpoint": {}}
        for stage, lr in rates.items():
            model = load_reward_model(base.path) if stage == "rm" else load_causal_lm(base.path)
            out["as_trained"][stage] = changed_share(model, lr)
            out["as_checkpoint"][stage] = changed_share(
                AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M"), lr)  # bfloat16 on disk
        out["checkpoint_dtype"] = str(next(AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M")
                                           .parameters()).dtype)
        print("RESULT " + json.dumps(out))
    """, gpu_env)
    assert result["checkpoint_dtype"] == "torch.bfloat16"  # the fake, like SmolLM2, is stored in bf16
    for stage, share in result["as_trained"].items():
        assert share > 0.99, (stage, share)
        assert result["as_checkpoint"][stage] < share, stage
    assert result["as_checkpoint"]["ppo"] < 0.1  # PPO's 1e-6 in bfloat16: nearly nothing moves


def test_the_hub_tokenizer_gives_sft_answer_tokens_to_learn(gpu_env):
    result = run_python("""
        import json
        from helpers import course_data, sft
        from helpers.pipeline import load_or_train
        tok = load_or_train("tokenizer").tokenizer
        masks = [sum(sft.build_sft_example(tok, d.prompt, d.response)["assistant_mask"])
                 for d in course_data.demonstrations(n=20)]
        print("RESULT " + json.dumps({"answer_tokens": masks}))
    """, gpu_env)
    assert min(result["answer_tokens"]) > 0


def test_simulated_labelers_agree_like_the_papers_on_gold_rm_scores(gpu_env):
    """On hub prompts the labelers are the gold RM's score plus noise fitted to that score's scale,
    so two of them agree on about as many pairs as InstructGPT's labelers (72.6%)."""
    result = run_python("""
        import json, random
        from helpers import course_data, labelers
        examples = course_data.prompts("rm") + course_data.prompts("eval")
        rng = random.Random(0)
        others = [e.response for e in examples]
        items = []
        for e in examples:  # four answers of different quality: the reference, cut, padded, off-topic
            words = e.response.split()
            items.append((e, [e.response, " ".join(words[: max(1, len(words) // 3)]),
                              "Sure! " + e.response + " I hope this helps!", rng.choice(others)]))
        flat = labelers.gold_scores([e for e, rs in items for _ in rs], [r for _, rs in items for r in rs])
        noise = labelers.calibrate_noise_to_scores([flat[i:i + 4] for i in range(0, len(flat), 4)])
        first = labelers.labeler_team(2, seed=1, noise=noise)
        second = labelers.labeler_team(2, seed=2, noise=noise)
        a = [first[i % 2].rank(e, rs) for i, (e, rs) in enumerate(items)]
        b = [second[i % 2].rank(e, rs) for i, (e, rs) in enumerate(items)]
        print("RESULT " + json.dumps({"agreement": labelers.pairwise_agreement(a, b), "prompts": len(items)}))
    """, gpu_env)
    assert result["prompts"] >= 80
    assert abs(result["agreement"] - 0.726) <= 0.03, result


def test_the_gpu_check_script_runs(gpu_env):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py")], env=gpu_env, cwd=ROOT,
                          text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("SFT step", "RM step", "PPO iteration", "gold RM scoring", "predicted run time"):
        assert line in done.stdout, done.stdout


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_notebook_runs_on_the_gpu_profile(notebook, gpu_env, tmp_path, monkeypatch):
    for key, value in gpu_env.items():
        monkeypatch.setenv(key, value)
    run = course.run_notebook(notebook, tmp_path, timeout=600, env=gpu_env, progress=False)
    assert run.ok, f"{notebook.name}: {run.error}"
