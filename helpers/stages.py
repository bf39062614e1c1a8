"""Every stage of the pipeline as a cached artifact: ``load_or_train(stage)``.

A notebook asks for what it needs, e.g. ``base = load_or_train("base")``, and gets it from the
cache, or, when the cache lacks it, trains it (and whatever it depends on) with the default
settings, saying what it does. So every notebook runs on its own, even when the ones before it
never ran.

An artifact is a folder ``artifacts/<profile>[-fast]/<stage>/`` in ``save_pretrained`` format,
plus ``stage.json``: the settings that made it, the ids of the artifacts it was built from, and
its metrics. The rules:

* reuse only what was made with the current settings. A changed setting (a different number of
  steps, a retrained tokenizer, new code) rebuilds the artifact and says why; it is never
  silently reused;
* never leave half an artifact: a stage is trained into a temporary folder beside its target
  and renamed into place only once complete. A folder with no valid ``stage.json``, or whose
  files do not load, is reported as corrupt and rebuilt.

Stages live in a small registry. ``register_stage`` adds one: how its settings follow from the
profile and fast mode, how to train it into a folder, how to load it, and which stages it needs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers import progress, speed
from helpers.config import Settings, settings as current_settings

INFO_FILE = "stage.json"
HISTORY_FILE = "history.json"

#: Hub models of the gpu profile (the tiny profile trains its own from scratch).
GPU_MODELS = {
    "base": "HuggingFaceTB/SmolLM2-135M",
    "base_big": "HuggingFaceTB/SmolLM2-360M",
}


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """How to make and load one artifact.

    settings_fn(settings) -> dict: the stage's JSON-able settings for a profile and fast mode
        (``load_or_train`` overrides may replace any of them).
    train_fn(config, inputs, out_dir) -> dict: trains with ``config`` (the settings dict), the
        loaded artifacts of the stages it requires (``inputs[name]``), writes everything into
        ``out_dir`` (``save_pretrained``) and returns metrics (numbers, small lists).
    load_fn(path, info) -> (model, tokenizer): loads the artifact (model may be None).
    estimate_fn(config, settings) -> str: how long training takes, for the message printed.
    version: bump it when the stage's code changes what it produces: cached artifacts made by
        older code are then rebuilt.
    """

    name: str
    settings_fn: Callable[[Settings], dict]
    train_fn: Callable[[dict, dict, Path], dict | None]
    load_fn: Callable[[Path, dict], tuple[Any, Any]]
    requires: tuple[str, ...] = ()
    version: str = "1"
    estimate_fn: Callable[[dict, Settings], str] | None = None


STAGES: dict[str, Stage] = {}

#: Modules that register further stages when imported, so ``load_or_train("sft")`` works
#: without importing them first. A module that adds a stage lists it here.
STAGE_MODULES: dict[str, str] = {
    "sft": "helpers.sft",
    "comparisons": "helpers.reward",
    "rm": "helpers.reward",
    "ppo": "helpers.ppo",
    "ppo_ptx": "helpers.ppo",
    "ppo_high_beta": "helpers.ppo",
    "dpo": "helpers.dpo",
}


def register_stage(name: str, settings_fn, train_fn, load_fn, requires=(), version: str = "1",
                   estimate_fn=None) -> Stage:
    """Add (or replace) a stage in the registry; returns it."""
    stage = Stage(name, settings_fn, train_fn, load_fn, tuple(requires), str(version), estimate_fn)
    STAGES[name] = stage
    return stage


def get_stage(name: str) -> Stage:
    if name not in STAGES and name in STAGE_MODULES:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(STAGE_MODULES[name])
    if name not in STAGES:
        raise KeyError(f"Unknown stage {name!r}. Known stages: {', '.join(sorted(STAGES))}")
    return STAGES[name]


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """A loaded stage: ``.model`` (None for the tokenizer), ``.tokenizer``, ``.path``, ``.info``."""

    stage: str
    path: Path
    info: dict
    model: Any = None
    tokenizer: Any = None

    @property
    def build_id(self) -> str:
        """Unique id of this build; stages built from it record it."""
        return self.info["build_id"]

    @property
    def metrics(self) -> dict:
        return self.info.get("metrics", {})

    @property
    def history(self) -> dict | None:
        """The training curves saved beside the artifact, if the stage saved any."""
        file = self.path / HISTORY_FILE
        return json.loads(file.read_text()) if file.exists() else None


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(old: dict, new: dict) -> list[str]:
    """Readable differences, e.g. ``["steps 3000 -> 1500", "tokenizer was rebuilt"]``."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        before, after = old_flat.get(key, "(unset)"), new_flat.get(key, "(unset)")
        if before == after:
            continue
        if key.startswith("requires."):
            changes.append(f"{key.split('.', 1)[1]} was rebuilt")
        else:
            changes.append(f"{key} {before} -> {after}")
    return changes


def _jsonable(value):
    """Settings round-trip through JSON before comparison (tuples become lists and so on)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def wanted_settings(stage: Stage, run: Settings, inputs: dict[str, Artifact], overrides: dict) -> dict:
    """Everything an artifact must have been made with to be reused."""
    config = dict(stage.settings_fn(run))
    unknown = set(overrides) - set(config)
    if unknown:
        raise TypeError(f"{stage.name} has no setting(s) {sorted(unknown)}; its settings are {sorted(config)}")
    config.update(overrides)
    return _jsonable({
        **config,
        "profile": run.profile,
        "fast": run.fast,
        "code_version": stage.version,
        "requires": {name: art.build_id for name, art in inputs.items()},
    })


def read_info(path: Path) -> dict | None:
    """The artifact's stage.json, or None when missing or invalid."""
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not {"stage", "settings", "build_id"} <= set(info):
        return None
    return info


@contextlib.contextmanager
def _stage_lock(parent: Path, name: str):
    """One process at a time builds a stage (two notebooks started together wait, not clash)."""
    parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still prevents half artifacts
        yield
        return
    with open(parent / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _show(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _build(stage: Stage, config: dict, inputs: dict[str, Artifact], target: Path,
           train_fn: Callable | None = None) -> None:
    """Train into a temporary folder beside ``target``, then rename it into place.
    ``train_fn`` replaces the stage's own (``keep_trained``: the files of a model trained elsewhere)."""
    parent = target.parent
    for leftover in parent.glob(f".{stage.name}.partial-*"):  # from a run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    partial = parent / f".{stage.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        speed.apply()  # torch's thread count, before any training
        started = time.perf_counter()
        with progress.stage(stage.name):
            metrics = (train_fn or stage.train_fn)(config, inputs, partial) or {}
        seconds = time.perf_counter() - started
        info = {
            "stage": stage.name,
            "build_id": uuid.uuid4().hex[:12],
            "settings": config,
            "metrics": _jsonable(metrics),
            "train_seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": _library_versions(),
        }
        info["files"] = _file_sizes(partial)  # to notice a file deleted or cut short later
        # stage.json is written last: a folder that has it is complete.
        (partial / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        old = None
        if target.exists():
            old = parent / f".{stage.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        partial.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"saved {stage.name} to {_show(target)} ({_duration(seconds)})")


def _file_sizes(folder: Path) -> dict[str, int]:
    """Size in bytes of every file of an artifact folder (stage.json aside), by relative path."""
    return {file.relative_to(folder).as_posix(): file.stat().st_size
            for file in sorted(folder.rglob("*")) if file.is_file() and file.name != INFO_FILE}


def _damage(path: Path, info: dict) -> str | None:
    """What is wrong with the files of a complete-looking artifact, or None. Artifacts made
    before stage.json listed the files are not checked."""
    for name, size in (info.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes instead of {size:,}"
    return None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _library_versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _why_stale(target: Path, config: dict) -> str | None:
    """Why the artifact folder ``target`` cannot be reused for ``config``; None when it can."""
    info = read_info(target)
    if info is None:
        return f"{_show(target)} is incomplete or corrupt (no valid {INFO_FILE})"
    if info["settings"] != config:
        return "settings changed: " + "; ".join(settings_diff(info["settings"], config))
    if damage := _damage(target, info):
        return f"{_show(target)} is corrupt ({damage})"
    return None


def _pull_prepared(stage: str, config: dict, target: Path, reason: str | None) -> bool:
    """Download ``stage`` from the prepared artifacts (``COURSE_PREPARED_ARTIFACTS``) into
    ``target`` instead of training it, if a copy made with ``config`` is there: True when done."""
    if not os.environ.get("COURSE_PREPARED_ARTIFACTS", "").strip():
        return False
    from helpers import prepared_artifacts  # imported only when used: it needs huggingface_hub

    return prepared_artifacts.pull(stage, config, target, reason)


def load_or_train(stage: str, **overrides) -> Artifact:
    """The artifact of ``stage``, from the cache if it was made with the current settings, else
    downloaded from the prepared artifacts if they hold it made with these settings (see
    ``helpers.prepared_artifacts``), else trained now (with its prerequisites, each found the
    same way). ``overrides`` replace the stage's default settings, e.g.
    ``load_or_train("base", steps=600)``."""
    spec = get_stage(stage)
    run = current_settings()
    inputs = {name: load_or_train(name) for name in spec.requires}
    config = wanted_settings(spec, run, inputs, overrides)
    target = run.stage_dir(stage)

    with _stage_lock(target.parent, stage):
        reason = None
        if target.exists():
            reason = _why_stale(target, config)
            if reason is None:
                info = read_info(target)
                print(f"loading {stage} from {_show(target)}")
                try:
                    model, tokenizer = spec.load_fn(target, info)
                    return Artifact(stage, target, info, model, tokenizer)
                except Exception as err:  # noqa: BLE001 - any failure to load means a bad artifact
                    reason = f"{_show(target)} is corrupt ({type(err).__name__}: {err})"
        if _pull_prepared(stage, config, target, reason):
            info = read_info(target)
            try:
                model, tokenizer = spec.load_fn(target, info)
                return Artifact(stage, target, info, model, tokenizer)
            except Exception as err:  # noqa: BLE001 - a prepared copy that does not load is trained anew
                reason = f"the prepared {stage} does not load ({type(err).__name__}: {err})"
        if reason:
            print(f"{reason}; retraining {stage}")
        estimate = spec.estimate_fn(config, run) if spec.estimate_fn else ""
        print(f"training {stage}" + (f" ({estimate})" if estimate else "") + " ...")
        _build(spec, config, inputs, target)
        info = read_info(target)
        model, tokenizer = spec.load_fn(target, info)
        return Artifact(stage, target, info, model, tokenizer)


def keep_trained(stage: str, save_fn: Callable[[Path], dict | None], settings: dict) -> bool:
    """Store a model trained outside ``load_or_train`` as the artifact of ``stage``, so that
    ``load_or_train(stage)`` loads it later instead of training the same run again.

    ``settings``: the stage settings the model was trained with; it is kept only if they are the
    stage's current ones (same profile, fast mode and prerequisites too), since anything else
    would pass off another run as the stage's. ``save_fn(folder)`` writes the files the stage's
    load function reads and returns the stage's metrics. An up-to-date artifact is left as it is.
    Returns True when the model was stored."""
    spec = get_stage(stage)
    run = current_settings()
    inputs = {name: load_or_train(name) for name in spec.requires}
    config = wanted_settings(spec, run, inputs, {})
    given = _jsonable({**config, **settings})
    if given != config:
        print(f"not kept as {stage}: trained with other settings than the stage's "
              f"({'; '.join(settings_diff(config, given))})")
        return False
    target = run.stage_dir(stage)
    with _stage_lock(target.parent, stage):
        if target.exists() and _why_stale(target, config) is None:
            print(f"{stage} with these settings is already in {_show(target)}; kept as it is")
            return False
        _build(spec, config, inputs, target, train_fn=lambda _config, _inputs, out_dir: save_fn(out_dir))
    return True


# --------------------------------------------------------------------------------------------
# The gpu profile: models from the Hugging Face hub
# --------------------------------------------------------------------------------------------


class HubUnavailableError(RuntimeError):
    """A hub model of the gpu profile could not be loaded (usually: no internet access)."""


def from_hub(load: Callable, name: str, **kwargs):
    """``load(name, **kwargs)`` (a ``from_pretrained``), with a clear message when offline."""
    try:
        return load(name, **kwargs)
    except Exception as err:  # noqa: BLE001 - offline, no route, rate limit: all mean the same here
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set" if offline else "no internet access, or the hub is unreachable"
        raise HubUnavailableError(
            f"The gpu profile loads {name!r} from the Hugging Face hub, and that failed "
            f"({why}: {type(err).__name__}). Without internet access use the tiny profile, which "
            "runs offline on any CPU: set COURSE_PROFILE=tiny (in a notebook, "
            "os.environ['COURSE_PROFILE'] = 'tiny' before the setup cell)."
        ) from err


# --------------------------------------------------------------------------------------------
# Stage "tokenizer"
# --------------------------------------------------------------------------------------------


def _tokenizer_settings(run: Settings) -> dict:
    if run.profile == "gpu":
        return {"hub_model": GPU_MODELS["base"]}
    from helpers.tokenizer import DEFAULT_MAX_LENGTH

    return {"vocab_size": 2048, "model_max_length": DEFAULT_MAX_LENGTH, "corpus_seed": run.seed,
            "n_docs": 2000 if run.fast else None}


def _train_tokenizer(config: dict, inputs: dict, out_dir: Path) -> dict:
    from helpers import tokenizer as tk

    if "hub_model" in config:
        from transformers import AutoTokenizer

        tok = from_hub(AutoTokenizer.from_pretrained, config["hub_model"])
        added = tk.add_course_tokens(tok)
        tok.save_pretrained(out_dir)
        return {"vocab_size": len(tok), "tokens_added": added}
    from helpers import world

    texts = world.pretraining_corpus(seed=config["corpus_seed"], n_docs=config["n_docs"])
    # The tokenizer learns from all the text the course's models will read: the web, and the
    # demonstrations' answers, whose opening words ("Sure", "Sorry") the web rarely starts a
    # line with. Without them, an answer's first word is spelled letter by letter.
    demos = world.demonstrations(seed=config["corpus_seed"])
    texts = texts + [f"{d.prompt}\n{d.response}" for d in demos]
    tok = tk.train_tokenizer(texts, vocab_size=config["vocab_size"],
                             model_max_length=config["model_max_length"])
    tok.save_pretrained(out_dir)
    return {"vocab_size": len(tok), "documents": len(texts)}


def _load_tokenizer(path: Path, info: dict):
    from helpers.tokenizer import load_tokenizer

    return None, load_tokenizer(path)


register_stage("tokenizer", _tokenizer_settings, _train_tokenizer, _load_tokenizer, version="3",
               estimate_fn=lambda config, run: "a few seconds" if "hub_model" not in config
               else f"downloading {config['hub_model']}'s tokenizer")


# --------------------------------------------------------------------------------------------
# Stages "base" and "base_big": pretraining (tiny) or a hub model (gpu)
# --------------------------------------------------------------------------------------------

#: Full-mode pretraining of the tiny profile. The tiny model trains at about 13,000 tokens/s on
#: a 2-core CPU; 2400 steps of 16 blocks of 128 tokens (4.9M tokens, about 2.5 passes over the
#: corpus) take about 6 minutes. Why so many: the ability to copy from the context (which most
#: tasks need) appears late. Measured with ``benchmarks/base_copying.py``: after 800 steps the
#: model names the user in 11% of the name probes, after 2400 steps in 100%, and it reverses
#: and sorts word lists it never could before. Measured too: 16 x 128 tokens per step reached a
#: lower held-out loss than 32 x 128 in the same time (more, smaller steps suit a small model).
BASE_PRETRAIN = dict(steps=2400, batch_size=16, seq_len=128, lr=3e-3, warmup=40, eval_every=200)
#: The big model (5.4x the parameters) runs about 4.5x slower per token (about 3,000 tokens/s on
#: 2 cores): the tiny model's 4.9M tokens would take over 25 minutes. It trains on the same
#: corpus for a third as many steps of the same size (1.6M tokens, about 9 minutes). A bigger
#: model learns more per token seen, but not three times more: notebook 06 shows both held-out
#: losses. The shorter run is the price of a notebook that runs in minutes, and the comparison
#: in notebook 06 says so.
BASE_BIG_PRETRAIN = dict(BASE_PRETRAIN, steps=800, warmup=40, eval_every=100,
                         lr=2e-3)  # a wider model wants a smaller step


def _pretrain_settings(size: str, recipe: dict) -> Callable[[Settings], dict]:
    def settings_fn(run: Settings) -> dict:
        if run.profile == "gpu":
            return {"hub_model": GPU_MODELS["base" if size == "tiny" else "base_big"]}
        from helpers.models import describe_size
        from helpers.pretrain import PretrainConfig

        cfg = PretrainConfig.fast() if run.fast else PretrainConfig(**recipe)
        cfg.seed = run.seed
        # Flat, so that one setting can be overridden: load_or_train("base", steps=600).
        return {"size": size, "shape": describe_size(size), "corpus_seed": run.seed,
                "n_docs": 2000 if run.fast else None, "heldout_docs": 100 if run.fast else 500,
                **asdict(cfg)}

    return settings_fn


def _train_base(config: dict, inputs: dict, out_dir: Path) -> dict:
    from helpers.config import device

    tok = inputs["tokenizer"].tokenizer
    if "hub_model" in config:
        from transformers import AutoModelForCausalLM

        model = from_hub(AutoModelForCausalLM.from_pretrained, config["hub_model"])
        if model.get_input_embeddings().num_embeddings < len(tok):
            model.resize_token_embeddings(len(tok))  # room for the pad and chat tokens
        model.config.pad_token_id = tok.pad_token_id
        model.config.eos_token_id = tok.eos_token_id
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        return {"parameters": sum(p.numel() for p in model.parameters())}

    from helpers import world
    from helpers.models import build_causal_lm, count_parameters, quiet_loading
    from helpers.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**{k: config[k] for k in PretrainConfig.__dataclass_fields__})
    texts = world.pretraining_corpus(seed=config["corpus_seed"], n_docs=config["n_docs"])
    heldout = world.heldout_corpus(seed=config["corpus_seed"], n_docs=config["heldout_docs"])
    model = build_causal_lm(tok, config["size"]).to(device())
    history = pretrain(model, tok, texts, cfg, progress=True, heldout_texts=heldout)
    with quiet_loading():
        model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)  # the folder is a complete model: from_pretrained(path) works
    (out_dir / HISTORY_FILE).write_text(json.dumps(history))
    last = history["train_loss"][-20:]
    return {
        "parameters": count_parameters(model),
        "train_loss": sum(last) / len(last),
        "heldout_loss": history["heldout_loss"][-1],
        "tokens_per_second": round(history["tokens_per_second"]),
        "tokens_seen": history["tokens_seen"],
        "seconds": round(history["seconds"], 1),
    }


def load_lm_artifact(path: Path, info: dict):
    """Load a causal-LM artifact (base, sft, ppo...): the model in eval mode and its tokenizer."""
    from helpers.config import device
    from helpers.models import load_causal_lm
    from helpers.tokenizer import load_tokenizer

    model = load_causal_lm(path, device())
    model.eval()
    return model, load_tokenizer(path)


def _pretrain_estimate(config: dict, run: Settings) -> str:
    if "hub_model" in config:
        return f"downloading {config['hub_model']} from the hub"
    if run.fast:
        return "a few seconds, fast mode"
    tokens = config["steps"] * config["batch_size"] * config["seq_len"]
    return speed.describe_minutes(speed.training_minutes(tokens, config["size"]))


register_stage("base", _pretrain_settings("tiny", BASE_PRETRAIN), _train_base, load_lm_artifact,
               requires=("tokenizer",), version="2", estimate_fn=_pretrain_estimate)
register_stage("base_big", _pretrain_settings("big", BASE_BIG_PRETRAIN), _train_base, load_lm_artifact,
               requires=("tokenizer",), version="3", estimate_fn=_pretrain_estimate)
