"""The fake hub cache (tests/fake_hub.py): the gpu profile's repos load offline by their real ids.

The loading runs in a subprocess with the fake's environment, so that huggingface_hub and
transformers read HF_HUB_CACHE and HF_HUB_OFFLINE fresh, as a notebook kernel would.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fake_hub as fake

ROOT = Path(__file__).resolve().parents[1]

LOAD_SCRIPT = textwrap.dedent(r'''
    import json, os, pathlib
    import pandas as pd
    import torch
    import huggingface_hub
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    out = {}
    text = "Hello world! The capital of Ulmar is Feyra.\n  Sure, 12 + 7 = 19."
    for repo_id in ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M"]:
        model = AutoModelForCausalLM.from_pretrained(repo_id)
        tok = AutoTokenizer.from_pretrained(repo_id)
        post = json.loads(tok.backend_tokenizer.to_str())["post_processor"]
        ids = tok(text)["input_ids"]
        dtypes = sorted({str(p.dtype) for p in model.parameters()})
        with torch.no_grad():
            logits = model.float()(torch.tensor([ids])).logits
        out[repo_id] = {
            "class": type(model).__name__,
            "dtypes": dtypes, "hidden": model.config.hidden_size,
            "vocab_size": model.config.vocab_size,
            "tied": model.config.tie_word_embeddings,
            "bos": model.config.bos_token_id, "eos": model.config.eos_token_id,
            "tok_bos": tok.bos_token_id, "tok_eos": tok.eos_token_id, "len_tok": len(tok),
            "pad": tok.pad_token, "roundtrip": tok.decode(ids) == text,
            "chat_ids": [tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")],
            "post_processor": post, "max_length": tok.model_max_length,
            "logits_finite": bool(torch.isfinite(logits).all()), "logits_shape": list(logits.shape),
        }

    rm_id = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
    rm = AutoModelForSequenceClassification.from_pretrained(rm_id)
    tok = AutoTokenizer.from_pretrained(rm_id)
    answers = ["The capital of Ulmar is Feyra.", "Sure! I hope this helps.", "No.",
               "How to paint a door: first get a brush and paint.", "cake egg plum", "19"]
    chats = [[{"role": "user", "content": "Tell me something."},
              {"role": "assistant", "content": a}] for a in answers]
    rendered = [tok.apply_chat_template(c, tokenize=False) for c in chats]
    dtypes = sorted({str(p.dtype) for p in rm.parameters()})
    rm = rm.float()
    with torch.no_grad():
        batch = tok(rendered, return_tensors="pt", padding=True)
        scores = rm(**batch).logits[:, 0].tolist()
        alone = [rm(**tok(r, return_tensors="pt")).logits[0, 0].item() for r in rendered]
    out["rm"] = {
        "class": type(rm).__name__, "num_labels": rm.config.num_labels, "dtypes": dtypes,
        "pad_id": rm.config.pad_token_id, "tok_pad_id": tok.pad_token_id, "eos": tok.eos_token,
        "rendered": rendered[0],
        "prompt": tok.apply_chat_template(chats[0][:1], tokenize=False, add_generation_prompt=True),
        "scores": scores, "alone": alone,
    }

    def frame(path):
        df = pd.read_parquet(path)
        return {"columns": list(df.columns), "rows": json.loads(df.to_json(orient="records"))}

    folder = huggingface_hub.snapshot_download(
        "HuggingFaceH4/no_robots", repo_type="dataset", allow_patterns=["data/*.parquet"])
    files = pathlib.Path(folder).rglob("*.parquet")
    out["no_robots"] = {"files": sorted(str(p.relative_to(folder)) for p in files)}
    for split in ("train", "test"):
        path = os.path.join(folder, f"data/{split}-00000-of-00001.parquet")
        out["no_robots"][split] = frame(path)
    folder = huggingface_hub.snapshot_download("Salesforce/wikitext", repo_type="dataset",
                                               allow_patterns=["wikitext-2-raw-v1/*"])
    out["wikitext"] = {
        split: frame(os.path.join(folder, f"wikitext-2-raw-v1/{split}-00000-of-00001.parquet"))
        for split in ("train", "validation", "test")}

    out["missing"] = []
    for load in (lambda: AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-999M"),
                 lambda: huggingface_hub.snapshot_download("nobody/no_data", repo_type="dataset")):
        try:
            load()
            out["missing"].append("loaded")
        except Exception as err:
            out["missing"].append(type(err).__name__)
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def loaded(fake_hub):
    """What a fresh process with the fake's environment loads (one subprocess for all checks)."""
    env = {**os.environ, **fake_hub, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_env_and_layout(fake_hub):
    assert set(fake_hub) == {"HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                             "TRANSFORMERS_OFFLINE"}
    hub = Path(fake_hub["HF_HUB_CACHE"])
    assert hub == Path(fake_hub["HF_HOME"]) / "hub"
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    assert all(fake_hub[k] == "1" for k in flags)
    for folder in ("models--HuggingFaceTB--SmolLM2-135M", "models--HuggingFaceTB--SmolLM2-360M",
                   "models--Skywork--Skywork-Reward-V2-Qwen3-0.6B",
                   "datasets--HuggingFaceH4--no_robots", "datasets--Salesforce--wikitext"):
        commit = (hub / folder / "refs" / "main").read_text()
        assert re.fullmatch("[0-9a-f]{40}", commit)
        assert any((hub / folder / "snapshots" / commit).iterdir())


def test_completed_cache_is_reused(fake_hub):
    root = Path(fake_hub["HF_HOME"])
    repo = root / "hub" / "models--HuggingFaceTB--SmolLM2-135M"
    weights = next(repo.glob("snapshots/*/model.safetensors"))
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert fake.build(root) == fake_hub
    assert time.perf_counter() - start < 1.0
    assert weights.stat().st_mtime_ns == before


@pytest.mark.parametrize("repo_id", ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M"])
def test_base_models_load_offline_in_bfloat16(loaded, repo_id):
    info = loaded[repo_id]
    assert info["class"] == "LlamaForCausalLM"
    assert info["dtypes"] == ["torch.bfloat16"]  # what the course must convert to fp32
    assert info["tied"] is True
    assert info["vocab_size"] >= info["len_tok"]
    assert info["bos"] == info["tok_bos"] and info["eos"] == info["tok_eos"]
    assert info["logits_finite"] and info["logits_shape"][-1] == info["vocab_size"]
    small, big = loaded["HuggingFaceTB/SmolLM2-135M"], loaded["HuggingFaceTB/SmolLM2-360M"]
    assert small["hidden"] < big["hidden"]


@pytest.mark.parametrize("repo_id", ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M"])
def test_base_tokenizer_like_smollm2(loaded, repo_id):
    info = loaded[repo_id]
    assert info["roundtrip"]
    assert info["pad"] is None
    assert info["post_processor"]["type"] == "ByteLevel"
    assert info["post_processor"]["trim_offsets"] is True
    assert info["max_length"] == fake.MODEL_MAX_LENGTH
    assert info["chat_ids"] == [1, 2] and info["tok_eos"] == 0


def test_gold_rm_scores_texts_differently(loaded):
    rm = loaded["rm"]
    assert rm["class"] == "Qwen3ForSequenceClassification" and rm["num_labels"] == 1
    assert rm["dtypes"] == ["torch.bfloat16"]
    assert rm["pad_id"] == rm["tok_pad_id"] is not None and rm["eos"] == "<|im_end|>"
    assert rm["rendered"] == ("<|im_start|>user\nTell me something.<|im_end|>\n"
                              "<|im_start|>assistant\nThe capital of Ulmar is Feyra.<|im_end|>\n")
    assert rm["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    scores = rm["scores"]
    assert len({round(s, 3) for s in scores}) == len(scores)
    assert max(scores) - min(scores) > 0.5
    # Right padding does not move a score: the model reads the last non-pad token.
    assert scores == pytest.approx(rm["alone"], abs=1e-3)


def test_no_robots_schema(loaded):
    data = loaded["no_robots"]
    assert data["files"] == [f"data/{split}-00000-of-00001.parquet" for split in ("test", "train")]
    train, test = data["train"]["rows"], data["test"]["rows"]
    assert len(train) >= 400 and len(test) >= 80
    assert data["train"]["columns"] == ["prompt", "prompt_id", "messages", "category"]
    prompts = [row["prompt"] for row in train + test]
    assert len(set(prompts)) == len(prompts)
    roles = []
    for row in train + test:
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
        assert row["category"] in {"Generation", "Open QA", "Brainstorm", "Chat", "Rewrite",
                                   "Summarize", "Coding", "Classify", "Closed QA", "Extract"}
        assert all(set(m) == {"role", "content"} and m["content"] for m in row["messages"])
        turns = [m["role"] for m in row["messages"]]
        first_user = turns.index("user")
        assert row["messages"][first_user]["content"] == row["prompt"]
        roles.append(tuple(turns))
    shares = {kind: sum(r == kind for r in roles) / len(roles) for kind in set(roles)}
    assert shares[("user", "assistant")] > 0.6
    assert 0.03 < shares[("system", "user", "assistant")] < 0.2
    assert 0.03 < shares[("user", "assistant", "user", "assistant")] < 0.2


def test_wikitext_raw_style(loaded):
    for split, frame in loaded["wikitext"].items():
        assert frame["columns"] == ["text"]
        lines = [row["text"] for row in frame["rows"]]
        titles = [l for l in lines if re.fullmatch(r" = [^=]+ = \n", l)]
        sections = [l for l in lines if re.fullmatch(r" = = [^=]+ = = \n", l)]
        assert len(titles) >= 10 and sections, split
        assert "" in lines
        assert all(l == "" or (l.endswith("\n") and "\n" not in l[:-1]) for l in lines)


def test_made_up_repos_fail_offline(loaded):
    assert "loaded" not in loaded["missing"]
