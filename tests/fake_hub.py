"""A fake Hugging Face hub cache, so that the gpu profile can be tested offline, end to end.

``build(root)`` writes, under ``root/"hub"``, the hub cache's own layout (``models--org--name/
refs/main`` holding a commit id, ``snapshots/<commit>/<files>``) for every repo the gpu profile
uses, with their real ids:

* ``HuggingFaceTB/SmolLM2-135M`` and ``HuggingFaceTB/SmolLM2-360M``: tiny randomly initialized
  ``LlamaForCausalLM`` of SmolLM2's architecture, saved in bfloat16 like the real checkpoints,
  with a SmolLM2-like byte-level BPE tokenizer (GPT-2's ``ByteLevel(trim_offsets=True)``
  post-processor, no pad token);
* ``Skywork/Skywork-Reward-V2-Qwen3-0.6B``: a tiny ``Qwen3ForSequenceClassification`` (one label,
  bfloat16) whose score head spreads its scores (std ~ 1 over varied texts), with a Qwen-style
  tokenizer and chat template;
* datasets ``HuggingFaceH4/no_robots`` and ``Salesforce/wikitext`` (``wikitext-2-raw-v1``) as
  small parquet files in the real schemas, filled with the course world's text.

It returns the environment a process needs to use the cache offline (``HF_HOME``,
``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``). Fixed
seeds make it deterministic; a marker file written last makes a completed cache reused as is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
from pathlib import Path

#: Bump when the fake's content changes: a cache built by another version is rebuilt.
VERSION = "1"
MARKER = ".fake_hub_complete"

BASE_IDS = {"HuggingFaceTB/SmolLM2-135M": (32, 64, 1), "HuggingFaceTB/SmolLM2-360M": (48, 96, 2)}
GOLD_RM_ID = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
NO_ROBOTS_ID = "HuggingFaceH4/no_robots"
WIKITEXT_ID = "Salesforce/wikitext"

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VOCAB_SIZE = 800
MODEL_MAX_LENGTH = 8192

#: Qwen's chat template, reduced to what the course uses: each message, then the assistant cue.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: no_robots' categories, from the world's prompt families.
CATEGORIES = {
    "arithmetic": "Closed QA", "capital": "Open QA", "unknown": "Open QA", "reverse": "Rewrite",
    "sort": "Rewrite", "sentiment": "Classify", "extract": "Extract", "list": "Brainstorm",
    "shorten": "Summarize", "chat": "Chat", "howto": "Generation", "harmful": "Generation",
}
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a friendly assistant who answers briefly.",
    "You are a careful assistant. Answer exactly what is asked.",
)
N_TRAIN, N_TEST = 440, 88


def env(root: Path) -> dict[str, str]:
    """The environment variables a process needs to use the cache under ``root``."""
    root = Path(root)
    return {
        "HF_HOME": str(root),
        "HF_HUB_CACHE": str(root / "hub"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def build(root: Path) -> dict[str, str]:
    """Write the fake hub cache under ``root`` (unless complete already); returns its env."""
    root = Path(root)
    marker = root / MARKER
    if marker.exists() and marker.read_text() == VERSION:
        return env(root)
    hub = root / "hub"
    if hub.exists():  # an interrupted or older build: start over
        shutil.rmtree(hub)
    hub.mkdir(parents=True)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        texts = _texts()
        base_tokenizer = _smollm2_tokenizer(texts)
        for i, (repo_id, (hidden, intermediate, kv_heads)) in enumerate(BASE_IDS.items()):
            _write_base(snapshot(hub, repo_id), base_tokenizer, hidden, intermediate, kv_heads,
                        seed=i)
        _write_gold_rm(snapshot(hub, GOLD_RM_ID), texts)
        _write_no_robots(snapshot(hub, NO_ROBOTS_ID, "dataset"))
        _write_wikitext(snapshot(hub, WIKITEXT_ID, "dataset"))
    finally:
        torch.set_num_threads(threads)
    marker.write_text(VERSION)
    return env(root)


def commit_of(repo_id: str, repo_type: str = "model") -> str:
    """The fake's commit id of a repo: 40 hex digits, fixed by the repo id."""
    return hashlib.sha1(f"fake-hub/{repo_type}/{repo_id}/{VERSION}".encode()).hexdigest()


def snapshot(hub: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Create ``<type>s--org--name/refs/main`` and return the (new) snapshot folder it names."""
    repo = Path(hub) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit_of(repo_id, repo_type)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def _texts() -> list[str]:
    """A few hundred lines of the world's plain English: the tokenizers' training text."""
    from helpers import world

    demos = world.demonstrations(seed=0)[:300]
    corpus = world.pretraining_corpus(seed=0, n_docs=300)
    return corpus + [f"{e.prompt}\n{e.response}" for e in demos]


def _train_bpe(texts: list[str], special_tokens: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2's pipeline, like SmolLM2's) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # GPT-2's and SmolLM2's post-processor: its trim_offsets=True trims the spaces out of the
    # offsets (the course has to know it when it maps characters to tokens).
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _smollm2_tokenizer(texts: list[str]):
    """SmolLM2's tokenizer in miniature: ``<|endoftext|>`` is bos, eos and unk; no pad token."""
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(texts, [ENDOFTEXT, IM_START, IM_END])  # ids 0, 1, 2, as in SmolLM2
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END], model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def _save_tokenizer(tokenizer, folder: Path, tokenizer_class: str, **config) -> None:
    """``save_pretrained``, then the real repo's ``tokenizer_class`` (and extra keys) in its
    tokenizer_config.json, and a special_tokens_map.json as the real repos have."""
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(tokenizer_class=tokenizer_class, model_max_length=MODEL_MAX_LENGTH, **config)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    special = {k: v for k in ("bos_token", "eos_token", "unk_token", "pad_token")
               if isinstance(v := cfg.get(k), str)}
    extra = [t for t in (IM_START, IM_END) if t in tokenizer.get_vocab()]
    special["additional_special_tokens"] = extra
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (folder / "chat_template.jinja").unlink(missing_ok=True)  # the template stays in the config


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _save_bf16(model, folder: Path) -> None:
    """Save in bfloat16 with ``dtype``/``torch_dtype`` bfloat16 in config.json, as the real
    checkpoints are."""
    import torch

    model.to(torch.bfloat16).save_pretrained(folder)
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["dtype"] = cfg["torch_dtype"] = "bfloat16"
    if "rope_parameters" in cfg:  # the real config.json files predate rope_parameters
        cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _write_base(folder: Path, tokenizer, hidden: int, intermediate: int, kv_heads: int,
                seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
        hidden_act="silu", max_position_embeddings=2048, rope_theta=100000.0,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        rms_norm_eps=1e-5, initializer_range=0.02, tie_word_embeddings=True,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=None, attention_bias=False,
        mlp_bias=False, use_cache=True,
    )
    torch.manual_seed(1000 + seed)
    model = LlamaForCausalLM(config).eval()
    _save_bf16(model, folder)
    _save_tokenizer(tokenizer, folder, "GPT2Tokenizer", add_prefix_space=False)


def _write_gold_rm(folder: Path, texts: list[str]) -> None:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForSequenceClassification

    tok = _train_bpe(texts, [ENDOFTEXT, IM_START, IM_END], vocab_size=VOCAB_SIZE - 100)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        bos_token=None, additional_special_tokens=[IM_START, IM_END],
        model_max_length=MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False,
    )
    pad = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
        rope_theta=1000000.0, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6, tie_word_embeddings=False, num_labels=1, pad_token_id=pad,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        initializer_range=0.02, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
    )
    torch.manual_seed(2000)
    model = Qwen3ForSequenceClassification(config).eval()
    # The random score head barely separates texts: scale it so that the scores of varied
    # conversations spread with std 1 (the same scale every build: seeds and texts are fixed).
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2001))
        model.score.weight.mul_(1.0 / _score_std(model, tokenizer, texts))
    _save_bf16(model, folder)
    _save_tokenizer(tokenizer, folder, "Qwen2Tokenizer", chat_template=QWEN_CHAT_TEMPLATE,
                    add_bos_token=False, errors="replace")


def _score_std(model, tokenizer, texts: list[str]) -> float:
    import torch

    chats = [f"{IM_START}user\n{a}{IM_END}\n{IM_START}assistant\n{b}{IM_END}\n"
             for a, b in zip(texts[300:340], texts[:40])]
    batch = tokenizer(chats, return_tensors="pt", padding=True, truncation=True, max_length=256)
    with torch.no_grad():
        scores = model(**batch).logits[:, 0].float()
    return float(scores.std())


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _write_parquet(rows: list[dict], path: Path, schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_no_robots(folder: Path) -> None:
    """no_robots' schema: prompt, prompt_id (sha256 of the prompt), messages, category."""
    import pyarrow as pa

    from helpers import world

    seen, demos = set(), []
    for example in world.demonstrations(seed=0):
        if example.prompt not in seen:
            seen.add(example.prompt)
            demos.append(example)
    rng = random.Random("fake-hub-no-robots")
    rows, queue = [], iter(demos)
    for _ in range(N_TRAIN + N_TEST):
        first = next(queue)
        messages = [{"content": first.prompt, "role": "user"},
                    {"content": first.response, "role": "assistant"}]
        kind = rng.random()
        if kind < 0.1:  # a leading system message
            messages.insert(0, {"content": rng.choice(SYSTEM_PROMPTS), "role": "system"})
        elif kind < 0.2:  # two turns
            second = next(queue)
            messages += [{"content": second.prompt, "role": "user"},
                         {"content": second.response, "role": "assistant"}]
        rows.append({"prompt": first.prompt,
                     "prompt_id": hashlib.sha256(first.prompt.encode("utf-8")).hexdigest(),
                     "messages": messages, "category": CATEGORIES[first.family]})
    schema = pa.schema([
        ("prompt", pa.string()), ("prompt_id", pa.string()),
        ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("category", pa.string()),
    ])
    _write_parquet(rows[:N_TRAIN], folder / "data" / "train-00000-of-00001.parquet", schema)
    _write_parquet(rows[N_TRAIN:], folder / "data" / "test-00000-of-00001.parquet", schema)
    (folder / "README.md").write_text("Fake no_robots for offline tests (tests/fake_hub.py).\n")


TITLE_WORDS = ("Altura", "Castria", "Lorren", "Rendal", "Brine", "Ember", "Vask", "Ulmar",
               "Feyra", "Harbor", "River", "Kingdom", "Valley", "Festival", "Market", "Road")
SECTIONS = ("History", "Geography", "Culture", "Economy", "Legacy", "Reception")


def _wikitext_lines(docs: list[str], rng: random.Random, n_articles: int) -> list[str]:
    """wikitext's raw style: ``" = Title = \\n"``, ``" = = Section = = \\n"``, paragraph lines
    ending in ``"\\n"``, and empty strings between them."""
    lines, docs = [], itertools.cycle(docs)
    for _ in range(n_articles):
        title = " ".join(rng.sample(TITLE_WORDS, 2))
        lines += ["", f" = {title} = \n", ""]
        for section in rng.sample(SECTIONS, rng.randint(1, 3)):
            lines += [f" = = {section} = = \n", ""]
            for _ in range(rng.randint(1, 3)):
                paragraph = " ".join(" ".join(next(docs).split()) for _ in range(rng.randint(2, 4)))
                lines += [f" {paragraph} \n", ""]
    return lines


def _write_wikitext(folder: Path) -> None:
    import pyarrow as pa

    from helpers import world

    rng = random.Random("fake-hub-wikitext")
    schema = pa.schema([("text", pa.string())])
    splits = {"train": (world.pretraining_corpus(seed=7, n_docs=1200), 40),
              "validation": (world.heldout_corpus(seed=1, n_docs=300), 10),
              "test": (world.heldout_corpus(seed=0, n_docs=300), 10)}
    for split, (docs, n_articles) in splits.items():
        rows = [{"text": line} for line in _wikitext_lines(docs, rng, n_articles)]
        path = folder / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet"
        _write_parquet(rows, path, schema)
    (folder / "README.md").write_text("Fake wikitext for offline tests (tests/fake_hub.py).\n")
