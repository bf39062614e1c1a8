"""Weights that come with the course, the way the paper's GPT-3 came already pretrained.

The tiny profile's bigger base model takes longer to pretrain on a laptop CPU than the rest of the
course together, so the repository carries its weights (``data/tiny/shipped/base_big/``: half
precision, with a manifest), and the ``base_big`` stage loads them instead of training when they
fit: made with the settings the stage asks for, for the same tokenizer, and every file matching
its checksum. Otherwise the stage trains as usual and says why.

    python -m helpers.shipped_weights verify              # checksums, and that the weights load
    python -m helpers.shipped_weights rebuild base_big    # pretrain anew and replace them

``rebuild`` pretrains in a fresh artifact folder with the stage's own recipe and settings; only
the weights' last bits differ from a student's run of the same stage (half precision).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from helpers import config, files, stages
from helpers import tokenizer as tk
from helpers.models import quiet_loading

MANIFEST = "manifest.json"
#: Set to "off" to ignore the shipped weights (``rebuild`` does, so that it really pretrains).
SWITCH = "COURSE_SHIPPED_WEIGHTS"
#: Settings that say which artifact a stage was built from, not how: the tokenizer is compared by
#: its vocabulary instead.
_NOT_COMPARED = ("requires",)


def folder(stage: str, profile: str | None = None) -> Path:
    run = config.settings()
    return run.data_dir / (profile or run.profile) / "shipped" / stage


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary: weights trained with another one would read wrong
    token ids."""
    vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocabulary.encode("utf-8")).hexdigest()


def _compared(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in _NOT_COMPARED}


def _read_manifest(where: Path) -> dict | None:
    try:
        return json.loads((where / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def checksum_problem(where: Path, manifest: dict) -> str | None:
    """None when every file the manifest lists is there with its checksum, else what is wrong."""
    problem = stages.checksum_problem(where, manifest.get("sha256", {}))
    return None if problem is None else f"{where}: {problem}: a damaged download, or a git-lfs pointer?"


def find(stage: str, settings: dict, tokenizer) -> tuple[Path | None, str]:
    """(the folder of shipped weights for ``stage`` made with ``settings`` and ``tokenizer``, "")
    when there is one that passes its checksums, else (None, why not)."""
    if os.environ.get(SWITCH, "").strip().lower() == "off":
        return None, f"{SWITCH}=off"
    where = folder(stage, settings.get("profile"))
    manifest = _read_manifest(where)
    if manifest is None:
        return None, f"the course ships no {stage} weights for the {settings.get('profile')} profile"
    if _compared(manifest["settings"]) != _compared(settings):
        changed = sorted(k for k in set(manifest["settings"]) | set(settings) if k not in _NOT_COMPARED
                         and manifest["settings"].get(k) != settings.get(k))
        return None, f"the shipped {stage} weights were made with other settings ({', '.join(changed)})"
    if manifest["tokenizer"] != tokenizer_fingerprint(tokenizer):
        return None, f"the shipped {stage} weights were made for another tokenizer"
    problem = checksum_problem(where, manifest)
    if problem:
        return None, problem
    return where, ""


def load(where: Path, device: torch.device):
    """The shipped model in float32 (every later stage fine-tunes it) and its manifest."""
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    return model.to(device), _read_manifest(where)


def export(stage: str, artifact: Path, out: Path, command: str) -> dict:
    """Write the artifact's model in half precision into ``out`` with its manifest: the stage's
    settings, the tokenizer's fingerprint, each file's checksum, the training metrics and curves."""
    info = stages.read_info(artifact)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with quiet_loading():
        model.to(torch.float16).save_pretrained(out)
    history = artifact / stages.HISTORY_FILE
    if history.is_file():
        shutil.copyfile(history, out / stages.HISTORY_FILE)
    tokenizer = tk.load_tokenizer(artifact)
    manifest = {
        "stage": stage,
        "settings": info["settings"],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "metrics": info.get("metrics", {}),
        "made_with": {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                      "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")},
        "sha256": {path.name: stages.sha256_of(path) for path in sorted(out.iterdir()) if path.name != MANIFEST},
    }
    files.replace_file(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return manifest


def verify_folder(where: Path) -> list[str]:
    """Problems with the shipped weights in ``where`` (manifest, checksums, loading); empty when none."""
    manifest = _read_manifest(where)
    if manifest is None:
        return [f"{where}: no readable {MANIFEST}"]
    problem = checksum_problem(where, manifest)
    if problem:
        return [problem]
    try:
        load(where, torch.device("cpu"))
    except Exception as err:  # noqa: BLE001 - report any failure to load
        return [f"{where} does not load: {type(err).__name__}: {err}"]
    return []


def verify(profile: str = "tiny") -> list[str]:
    """Problems with every shipped model of ``profile``; empty when none."""
    root = config.settings().data_dir / profile / "shipped"
    return [problem for where in (sorted(root.iterdir()) if root.is_dir() else []) for problem in verify_folder(where)]


def rebuild(stage: str) -> dict:
    """Pretrain ``stage`` anew with its recipe (shipped weights off, a fresh artifact folder) and
    replace its shipped weights with the result."""
    from helpers import pipeline  # the pipeline imports this module

    os.environ[SWITCH] = "off"
    with tempfile.TemporaryDirectory(prefix="shipped-") as scratch:
        os.environ["COURSE_ARTIFACTS"] = scratch
        artifact = pipeline.load_or_train(stage)
        command = f"python -m helpers.shipped_weights rebuild {stage}"
        return export(stage, artifact.path, folder(stage), command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.shipped_weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check the shipped weights' checksums and that they load")
    again = sub.add_parser("rebuild", help="pretrain a stage anew and ship the result")
    again.add_argument("stage")
    export_parser = sub.add_parser("export", help=argparse.SUPPRESS)  # from an artifact already trained
    export_parser.add_argument("stage")
    export_parser.add_argument("artifact", type=Path)
    args = parser.parse_args(argv)
    if args.command == "verify":
        problems = verify()
        print("\n".join(problems) if problems else "the shipped weights match their checksums and load")
        return 1 if problems else 0
    if args.command == "export":
        manifest = export(args.stage, args.artifact, folder(args.stage),
                          f"python -m helpers.shipped_weights rebuild {args.stage}")
    else:
        manifest = rebuild(args.stage)
    print(f"shipped {args.stage}: held-out loss {manifest['metrics'].get('heldout_loss')}, "
          f"files in {folder(args.stage)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
