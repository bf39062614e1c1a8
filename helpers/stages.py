"""The artifact cache: every stage of the pipeline kept as a folder, reused while its settings hold.

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
  and renamed into place only once complete. A folder with no valid ``stage.json``, a file whose
  size or SHA-256 differs from the one recorded at build time, or files that do not load, is
  reported as corrupt and rebuilt. What a killed process left (temporary folders, a replaced
  artifact not yet deleted) is swept up the next time the stage is loaded or built;
* the same settings give the same model: every stage is trained right after seeding with its
  seed, and a model with NaN or infinite weights is refused, never stored;
* a read-only artifact folder (an instructor's shared one) is only read: what it lacks is
  trained into a writable folder instead, and the message says which.

This module knows no stage: a ``Stage`` says how its settings follow from the profile and fast
mode, how to train it into a folder, how to load it, and which stages it needs, and the caller
passes the stages by name. The course's stages, in pipeline order, are ``helpers.pipeline``'s,
whose ``load_or_train(stage)`` is what the notebooks call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from helpers import progress, speed
from helpers.config import Settings, _default_artifacts, seed_everything, settings as current_settings
from helpers.files import lock_open_file

INFO_FILE = "stage.json"
HISTORY_FILE = "history.json"

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


def stage_of(registry: Mapping[str, Stage], name: str) -> Stage:
    """``registry[name]``, or a KeyError that lists the stages there are."""
    if name not in registry:
        raise KeyError(f"Unknown stage {name!r}. Known stages: {', '.join(registry)}")
    return registry[name]


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
        """The training curves saved beside the artifact, if the stage saved any. A damaged file
        gives None and a warning: the model itself may be fine, and a plot is not worth a
        traceback."""
        file = self.path / HISTORY_FILE
        if not file.exists():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
            warnings.warn(f"{file} is damaged ({type(err).__name__}: {err}), so there are no training "
                          f"curves of {self.stage} to show. To rebuild the artifact, delete the folder "
                          f"{self.path} and run load_or_train({self.stage!r}) again.", stacklevel=2)
            return None


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


#: Settings that count something or size a step: 0 or less makes no run (a division by zero,
#: an empty batch, a model that never moves), so an override must be above 0.
MUST_BE_POSITIVE = frozenset({
    "steps", "batch_size", "seq_len", "eval_every", "epochs", "total_episodes", "minibatch_size",
    "ppo_epochs", "max_new_tokens", "max_length", "vocab_size", "model_max_length", "n_docs",
    "heldout_docs", "n_prompts", "heldout_prompts", "k", "n_labelers", "n_demonstrations",
    "prompts_per_batch", "pairs_per_batch", "ptx_batch_size", "ptx_seq_len", "ptx_docs",
    "reward_norm_prompts", "kl_horizon", "temperature",
    "lr", "learning_rate", "value_learning_rate",
})
#: The learning rates among the settings, named when a run ends with NaN weights.
LEARNING_RATES = ("lr", "learning_rate", "value_learning_rate")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad_override(name: str, value, default) -> str | None:
    """What is wrong with ``name=value`` for a setting whose default is ``default``, or None.
    Numbers are checked; None passes (several settings mean "all of them" by None), and so does
    anything for a setting that is not a number."""
    if value is None:
        return None
    whole = isinstance(default, int) and not isinstance(default, bool)
    if not _is_number(value):
        return f"is not a number: use a {'whole number' if whole else 'number'}" if _is_number(default) else None
    if not math.isfinite(value):
        return "is not a finite number: use a finite one"
    if whole and not isinstance(value, int):
        return f"is not a whole number: use one such as {round(value)}"
    if name in MUST_BE_POSITIVE and value <= 0:
        return "must be above 0"
    if name.endswith("seed") and not 0 <= value < 2**32:  # what NumPy accepts
        return f"must be from 0 to {2**32 - 1}"
    return None


def check_overrides(stage: Stage, run: Settings, overrides: dict) -> None:
    """Refuse overrides the stage does not have, or values no run can use, before anything is
    trained; the message names the setting and says what to use (its default for a start)."""
    defaults = stage.settings_fn(run)
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"{stage.name} has no setting(s) {sorted(unknown)}; its settings are {sorted(defaults)}")
    for name, value in overrides.items():
        if problem := _bad_override(name, value, defaults[name]):
            raise ValueError(f"load_or_train({stage.name!r}, {name}={value!r}): {name} {problem} "
                             f"(the default is {defaults[name]!r}).")


def wanted_settings(stage: Stage, run: Settings, inputs: dict[str, Artifact], overrides: dict) -> dict:
    """Everything an artifact must have been made with to be reused."""
    check_overrides(stage, run, overrides)
    config = dict(stage.settings_fn(run))
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
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if _well_formed(info) else None


def _mapping_of(value, key_type, value_type) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, key_type) and isinstance(v, value_type) and not isinstance(v, bool)
        for k, v in value.items())


def _well_formed(info) -> bool:
    """Whether stage.json has the fields and types every check reads. A file edited by hand or
    written by something else is then "corrupt" (and rebuilt), not a crash in the middle of a
    comparison. ``files`` and ``sha256`` are optional: artifacts made before them lack them."""
    return (isinstance(info, dict)
            and isinstance(info.get("stage"), str)
            and isinstance(info.get("build_id"), str)
            and isinstance(info.get("settings"), dict)
            and _mapping_of(info["settings"].get("requires", {}), str, str)
            and isinstance(info.get("metrics", {}), dict)
            and _mapping_of(info.get("files") or {}, str, int)
            and _mapping_of(info.get("sha256") or {}, str, str))


def _open_lock(parent: Path, name: str):
    """(the stage's lock file opened, or None; whether ``parent`` is writable). A read-only folder
    (an instructor's shared artifacts: mounted read-only, or someone else's) gets nothing created
    in it; the lock file its owner left there, if any, is opened for reading."""
    lock = parent / f".{name}.lock"
    if _writable(parent):
        with contextlib.suppress(OSError):  # writable by its mode bits, refused all the same (ACLs)
            return open(lock, "a"), True  # noqa: SIM115 - closed by _stage_lock
    try:
        return open(lock, "rb"), False  # noqa: SIM115
    except OSError:
        return None, False


@contextlib.contextmanager
def _stage_lock(parent: Path, name: str):
    """One process at a time builds a stage (two notebooks started together wait, not clash).
    Yields whether ``parent`` is writable. In a read-only folder the lock is shared: readers wait
    only while the folder's owner replaces the stage. Closing the file releases the lock."""
    handle, writable = _open_lock(parent, name)
    with handle if handle is not None else contextlib.nullcontext():
        if handle is not None:
            _flock(handle, exclusive=writable)
        yield writable


def _flock(handle, exclusive: bool) -> None:
    try:
        lock_open_file(handle, exclusive)  # no lock where the system has none: the rename still
        # prevents half artifacts
    except OSError:
        if exclusive:
            raise
        # a shared lock on a read-only file, which some network file systems refuse: read without


def _show(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _sweep(parent: Path, name: str) -> None:
    """Clear what a killed process left of stage ``name`` in ``parent``; called under the stage's
    lock, so no running build owns any of it. A build renames the old artifact aside, then the new
    one into place, then deletes the old one: killed in between, it leaves the old one under its
    temporary name (half a GB on the gpu profile) and, between the two renames, no artifact at
    all. A complete old one is then put back (and checked like any other); the rest goes."""
    target = parent / name
    if not target.exists():
        _restore(parent, name, target)
    leftovers = [*parent.glob(f".{name}.old-*"), *parent.glob(f".{name}.partial-*"),
                 *parent.glob(f".{name}.prepared-*"), *parent.glob(f".{name}.*.tmp")]
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _restore(parent: Path, name: str, target: Path) -> None:
    """Put the newest complete ``.<name>.old-*`` artifact back in place, if there is one."""
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in olds:
        info = read_info(old)
        if info is not None and _damage(old, info) is None:
            old.rename(target)
            print(f"restored {name} in {_show(target)}: a run killed while replacing it had left it aside")
            return


def _stage_seed(config: dict, run: Settings) -> int:
    """The seed a stage trains with: its own ``seed`` setting, else the run's (COURSE_SEED)."""
    seed = config.get("seed", run.seed)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else run.seed


class NonFiniteWeightsError(ValueError):
    """Training ended with NaN or infinite weights; nothing was stored."""


def _build(stage: Stage, config: dict, inputs: dict[str, Artifact], target: Path,
           train_fn: Callable | None = None, seed: int | None = None) -> None:
    """Train into a temporary folder beside ``target``, then rename it into place.
    ``train_fn`` replaces the stage's own (``keep_trained``: the files of a model trained elsewhere).
    ``seed``: every random number generator is seeded with it right before training, so the
    same settings give the same model whatever ran before in the process (None: no seeding)."""
    parent = target.parent
    partial = parent / f".{stage.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        speed.apply()  # torch's thread count, before any training (it may time a model)
        if seed is not None:
            seed_everything(seed)
        started = time.perf_counter()
        with progress.stage(stage.name):
            metrics = (train_fn or stage.train_fn)(config, inputs, partial) or {}
        seconds = time.perf_counter() - started
        _refuse_non_finite(stage.name, config, partial)
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
        info["sha256"] = _checksums(partial)  # ... or changed in place (flipped bytes, NaN weights)
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


def sha256_of(file: Path) -> str:
    with open(file, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of an artifact folder (stage.json aside), by relative path. Hashing
    runs at about 1 GB/s: milliseconds for the tiny profile's few MB, about a second at most for
    a gpu-profile model."""
    return {file.relative_to(folder).as_posix(): sha256_of(file)
            for file in sorted(folder.rglob("*")) if file.is_file() and file.name != INFO_FILE}


def _damage(path: Path, info: dict) -> str | None:
    """What is wrong with the files of a complete-looking artifact, or None. Sizes first (a
    deleted or cut-short file costs no hashing), then checksums. Artifacts made before stage.json
    listed the files, or their checksums, are checked as far as it does."""
    for name, size in (info.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes instead of {size:,}"
    return checksum_problem(path, info.get("sha256") or {})


def checksum_problem(folder: Path, digests: dict[str, str]) -> str | None:
    """What is wrong with the files ``digests`` lists (name -> SHA-256) in ``folder``, or None."""
    for name, digest in digests.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if sha256_of(file) != digest:
            return f"{name} changed since it was saved (its SHA-256 differs)"
    return None


def _first_non_finite(folder: Path) -> str | None:
    """``file: tensor`` of the first saved weight tensor with a NaN or an infinity, or None.
    One tensor at a time, so a big model is never held twice in memory."""
    import torch  # the cache loads torch only when it checks weights (a CLI listing artifacts need not)
    from safetensors import safe_open

    for file in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a dict
                tensor = weights.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{file.relative_to(folder).as_posix()}: {key}"
    return None


def _refuse_non_finite(stage: str, config: dict, folder: Path) -> None:
    """A model whose weights went NaN or infinite (a learning rate too large, most often) must
    never become an artifact: every later stage would train on it, and its loss says only "nan"."""
    where = _first_non_finite(folder)
    if where is None:
        return
    rates = ", ".join(f"{name}={config[name]!r}" for name in LEARNING_RATES if name in config)
    hint = (f" The usual cause is a learning rate too large for the model ({rates}): use a smaller "
            "one, such as the stage's default." if rates else "")
    raise NonFiniteWeightsError(f"Training {stage} gave a model with NaN or infinite weights ({where}); "
                                f"it was not saved.{hint}")


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


def is_current(registry: Mapping[str, Stage], stage: str) -> bool:
    """Whether ``load_or_train(registry, stage)`` would load ``stage`` (with the current settings)
    without training anything: it and every stage it needs are in the cache, up to date. A
    notebook asks this to show an optional model only once it has been trained."""
    spec = stage_of(registry, stage)
    run = current_settings()
    inputs = {}
    for name in spec.requires:
        if not is_current(registry, name):
            return False
        inputs[name] = Artifact(name, run.stage_dir(name), read_info(run.stage_dir(name)))
    target = run.stage_dir(stage)
    return target.exists() and _why_stale(target, wanted_settings(spec, run, inputs, {})) is None


def _pull_prepared(stage: str, config: dict, target: Path, reason: str | None) -> bool:
    """Download ``stage`` from the prepared artifacts (``COURSE_PREPARED_ARTIFACTS``) into
    ``target`` instead of training it, if a copy made with ``config`` is there: True when done."""
    if not os.environ.get("COURSE_PREPARED_ARTIFACTS", "").strip():
        return False
    from helpers import prepared_artifacts  # imported only when used: it needs huggingface_hub

    return prepared_artifacts.pull(stage, config, target, reason)


def load_or_train(registry: Mapping[str, Stage], stage: str, **overrides) -> Artifact:
    """The artifact of ``stage``, from the cache if it was made with the current settings, else
    downloaded from the prepared artifacts if they hold it made with these settings (see
    ``helpers.prepared_artifacts``), else trained now (with its prerequisites, each found the
    same way). ``overrides`` replace the stage's default settings, e.g.
    ``load_or_train("base", steps=600)``.

    A read-only artifact folder (an instructor's shared one) is only read: a stage it lacks, or
    holds with other settings, is trained into a writable folder instead, and the message names
    it (see ``_instead_of_read_only``).

    ``registry``: the stages by name (the course's: ``helpers.pipeline.STAGES``), where this
    stage's prerequisites are found too."""
    spec = stage_of(registry, stage)
    run = current_settings()
    check_overrides(spec, run, overrides)  # before any prerequisite is trained for nothing
    inputs = {name: load_or_train(registry, name) for name in spec.requires}
    config = wanted_settings(spec, run, inputs, overrides)
    target = run.stage_dir(stage)

    with _stage_lock(target.parent, stage) as writable:
        if writable:
            return _load_or_build(spec, run, config, inputs, target)
        artifact, reason = _load_current(spec, target, config)
    if artifact is not None:
        return artifact
    target = _instead_of_read_only(run, stage, reason)
    with _stage_lock(target.parent, stage):
        return _load_or_build(spec, run, config, inputs, target)


def _load_current(spec: Stage, target: Path, config: dict) -> tuple[Artifact | None, str | None]:
    """(the artifact in ``target``, None) when it was made with ``config`` and loads, else (None,
    why not), the reason None when there is no artifact at all. Writes nothing."""
    if not target.exists():
        return None, None
    reason = _why_stale(target, config)
    if reason is None:
        info = read_info(target)
        print(f"loading {spec.name} from {_show(target)}")
        try:
            model, tokenizer = spec.load_fn(target, info)
            return Artifact(spec.name, target, info, model, tokenizer), None
        except Exception as err:  # noqa: BLE001 - any failure to load means a bad artifact
            reason = f"{_show(target)} is corrupt ({type(err).__name__}: {err})"
    return None, reason


def _load_or_build(spec: Stage, run: Settings, config: dict, inputs: dict[str, Artifact],
                   target: Path) -> Artifact:
    """The stage in the writable folder ``target``: loaded if up to date, else pulled from the
    prepared artifacts, else trained. Called under the stage's lock."""
    stage = spec.name
    _sweep(target.parent, stage)
    artifact, reason = _load_current(spec, target, config)
    if artifact is not None:
        return artifact
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
    _build(spec, config, inputs, target, seed=_stage_seed(config, run))
    info = read_info(target)
    model, tokenizer = spec.load_fn(target, info)
    return Artifact(stage, target, info, model, tokenizer)


def _writable(folder: Path) -> bool:
    """Whether artifacts can be written into ``folder`` (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _fallback_roots() -> list[Path]:
    """Where to keep the stages a read-only artifact folder cannot serve, in order: the default
    artifact folder (``artifacts/`` of the clone, or of the working folder when installed), then
    a folder of this user's in the temporary directory."""
    user = f"-{os.getuid()}" if hasattr(os, "getuid") else ""
    return [_default_artifacts(), Path(tempfile.gettempdir()) / f"course-artifacts{user}"]


def _instead_of_read_only(run: Settings, stage: str, reason: str | None) -> Path:
    """The stage's folder in the first writable fallback root, announced with why."""
    folder = run.stage_dir(stage).parent
    what = f"its {stage} cannot be used ({reason})" if reason else f"it has no {stage}"
    for root in _fallback_roots():
        target = replace(run, artifacts_dir=root).stage_dir(stage)
        if target.parent.resolve() != folder.resolve() and _writable(target.parent):
            print(f"{_show(folder)} is read-only and {what}: {stage} is kept in "
                  f"{_show(target.parent)} instead (set COURSE_ARTIFACTS to choose another folder)")
            return target
    raise PermissionError(f"{folder} is read-only and {what}, and none of "
                          f"{', '.join(str(root) for root in _fallback_roots())} can be written either: "
                          "set COURSE_ARTIFACTS to a folder you can write to.")


def keep_trained(registry: Mapping[str, Stage], stage: str, save_fn: Callable[[Path], dict | None],
                 settings: dict) -> bool:
    """Store a model trained outside ``load_or_train`` as the artifact of ``stage``, so that
    ``load_or_train(stage)`` loads it later instead of training the same run again.

    ``settings``: the stage settings the model was trained with; it is kept only if they are the
    stage's current ones (same profile, fast mode and prerequisites too), since anything else
    would pass off another run as the stage's. ``save_fn(folder)`` writes the files the stage's
    load function reads and returns the stage's metrics. An up-to-date artifact is left as it is,
    and a model with NaN or infinite weights is not kept. In a read-only artifact folder, the
    model goes where ``load_or_train`` trains what that folder lacks.
    Returns True when the model was stored."""
    spec = stage_of(registry, stage)
    run = current_settings()
    inputs = {name: load_or_train(registry, name) for name in spec.requires}
    config = wanted_settings(spec, run, inputs, {})
    given = _jsonable({**config, **settings})
    if given != config:
        print(f"not kept as {stage}: trained with other settings than the stage's "
              f"({'; '.join(settings_diff(config, given))})")
        return False
    target = run.stage_dir(stage)
    with _stage_lock(target.parent, stage) as writable:
        if writable or _is_current(target, config):
            return _keep(spec, config, inputs, target, save_fn, writable)
    target = _instead_of_read_only(run, stage, _why_stale(target, config) if target.exists() else None)
    with _stage_lock(target.parent, stage):
        return _keep(spec, config, inputs, target, save_fn, writable=True)


def _is_current(target: Path, config: dict) -> bool:
    return target.exists() and _why_stale(target, config) is None


def _keep(spec: Stage, config: dict, inputs: dict[str, Artifact], target: Path,
          save_fn: Callable[[Path], dict | None], writable: bool) -> bool:
    """``keep_trained`` under the stage's lock: True when the model was stored."""
    if writable:
        _sweep(target.parent, spec.name)
    if _is_current(target, config):
        print(f"{spec.name} with these settings is already in {_show(target)}; kept as it is")
        return False
    try:  # no seeding (seed=None): nothing trains here, and the notebook's random state is its own
        _build(spec, config, inputs, target, train_fn=lambda _config, _inputs, out_dir: save_fn(out_dir),
               seed=None)
    except NonFiniteWeightsError as err:
        print(f"not kept as {spec.name}: {err}")
        return False
    return True
