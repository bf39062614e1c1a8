"""Prepared artifacts: an instructor's trained stages, published once, downloaded by every student.

In Colab every notebook runs in a runtime of its own, so notebook 05 opened alone first retrains
the base model, SFT, the comparisons and the reward model. For a class, an instructor runs the
course once and publishes what it made::

    python -m helpers.prepared_artifacts publish --repo user/instructgpt-class

which uploads every complete stage folder ``artifacts/<profile>[-fast]/<stage>/`` to the Hugging
Face Hub repository ``user/instructgpt-class``, under the same relative path
(``huggingface_hub`` must be logged in: ``hf auth login``, or ``HF_TOKEN``). Students then set
``PREPARED = "user/instructgpt-class"`` in a notebook's setup cell (or the environment variable
``COURSE_PREPARED_ARTIFACTS``), and ``load_or_train`` downloads a stage it does not have instead of
training it. A local folder in the same layout (e.g. another run's ``artifacts/``, or a shared
Drive folder) works in place of a repository.

A prepared stage is used only when it passes the very check a stage cached on disk must pass:
made with the same settings (profile, fast mode, code version, every stage setting) from the same
prerequisites (their build ids), and with all its files intact. Prerequisites are resolved first,
so they come from the same source, and the chain matches. A student who trained their own SFT
gets a reward model trained on it, not the instructor's, and is told why.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from helpers.config import PROFILES, Settings, settings as current_settings
from helpers.stages import INFO_FILE, _damage, read_info, settings_diff

VARIABLE = "COURSE_PREPARED_ARTIFACTS"
#: Seconds to wait for the hub to answer before training instead: a class on a slow network
#: should see a message, never a notebook that hangs.
HUB_TIMEOUT = 10

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Per source, this process's answer from the hub: ("ok", (revision, files)) or ("error", message),
#: so a repository that is missing or unreachable costs one wait and one message, not one per stage.
_hub_answers: dict[str, tuple[str, object]] = {}


class PreparedUnavailable(RuntimeError):
    """The prepared artifacts cannot be reached; the message says what to do."""


def source() -> str | None:
    """The prepared artifacts in use: ``COURSE_PREPARED_ARTIFACTS``, or None."""
    return os.environ.get(VARIABLE, "").strip() or None


def _is_local(where: str) -> bool:
    return Path(where).expanduser().is_dir() or where.startswith(("/", ".", "~")) or not _REPO_ID.match(where)


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return True
    return bool(constants.HF_HUB_OFFLINE)


# --------------------------------------------------------------------------------------------
# Pulling one stage (called by load_or_train)
# --------------------------------------------------------------------------------------------


def pull(stage: str, config: dict, target: Path, stale_reason: str | None = None) -> bool:
    """Put the prepared copy of ``stage`` into ``target`` if one made with ``config`` exists.

    Returns True when ``target`` now holds it; otherwise prints why not (load_or_train then
    trains). Never raises for a missing or unreachable source."""
    where = source()
    if not where:
        return False
    rel = f"{target.parent.name}/{stage}"  # e.g. tiny/sft: the repository mirrors artifacts/
    for leftover in target.parent.glob(f".{stage}.prepared-*"):  # from a download that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = target.parent / f".{stage}.prepared-{uuid.uuid4().hex[:8]}"
    try:
        fetch = _local_fetch(where) if _is_local(where) else _hub_fetch(where)
        folder = fetch(rel, staging, info_only=True)
        if folder is None:
            print(f"{stage} is not among the prepared artifacts in {where}")
            return False
        why = _mismatch(folder, config, target.parent, check_files=False)
        if why:
            print(f"the prepared {stage} in {where} does not fit: {why}")
            return False
        print((f"{stale_reason}; " if stale_reason else "")
              + f"downloading {stage} from the prepared artifacts in {where} ...")
        folder = fetch(rel, staging, info_only=False)
        why = _mismatch(folder, config, target.parent, check_files=True) if folder is not None else "its files are missing"
        if why:
            print(f"the prepared {stage} in {where} is not usable: {why}")
            return False
        _move_into_place(folder, target)
        print(f"downloaded {stage} to {target}")
        return True
    except PreparedUnavailable as err:
        print(err)
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mismatch(folder: Path, config: dict, mine: Path, check_files: bool) -> str | None:
    """Why the stage in ``folder`` is not the one wanted: load_or_train's own up-to-date check
    (``check_files``: also that every file is there, at its size; not before they are downloaded).
    ``mine``: the local folder of the stages, named in the advice when prerequisites differ."""
    info = read_info(folder)
    if info is None:
        return f"no valid {INFO_FILE}"
    if info["settings"] != config:
        changes = settings_diff(info["settings"], config)  # "steps 3000 -> 1500": prepared -> wanted
        why = "made with other settings (prepared -> wanted: " + "; ".join(changes) + ")"
        rebuilt = [change.removesuffix(" was rebuilt") for change in changes if change.endswith(" was rebuilt")]
        if rebuilt:
            why += (f". It was built from the prepared {', '.join(rebuilt)}, not from yours: to use "
                    f"the prepared models, delete your own ({', '.join(str(mine / name) for name in rebuilt)}) "
                    "and run the cell again")
        return why
    if check_files and (damage := _damage(folder, info)):
        return f"damaged ({damage})"
    return None


def _move_into_place(folder: Path, target: Path) -> None:
    """Rename the checked copy into place; a stale folder it replaces is removed only after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    folder.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _local_fetch(where: str):
    root = Path(where).expanduser()
    if not root.is_dir():
        raise PreparedUnavailable(
            f"{VARIABLE} (or PREPARED) names {where!r}, which is neither a folder here nor a hub "
            "repository id (user/name): training instead. Fix the name, or set it to None.")

    def fetch(rel: str, staging: Path, info_only: bool) -> Path | None:
        found = root / rel
        if not (found / INFO_FILE).is_file():
            return None
        copy = staging / rel
        if info_only:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found / INFO_FILE, copy / INFO_FILE)
        else:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(found, copy)
        return copy

    return fetch


def _hub_answer(repo: str) -> tuple[str, list[str]]:
    """The repository's current revision and file list, asked once per process, with a timeout."""
    if repo not in _hub_answers:
        _hub_answers[repo] = _ask_hub(repo)
    kind, answer = _hub_answers[repo]
    if kind == "error":
        raise PreparedUnavailable(answer)
    return answer


def _ask_hub(repo: str) -> tuple[str, object]:
    todo = (f"Stages are trained here instead. To use prepared artifacts without internet, set "
            f"PREPARED (or {VARIABLE}) to a folder that holds them; to train everything here, set "
            "it to None.")
    if _offline():
        return "error", (f"the prepared artifacts are the hub repository {repo}, but HF_HUB_OFFLINE "
                         f"is set, so nothing is downloaded. {todo}")
    import huggingface_hub  # imported when used: only hub downloads need it, and it is slow to load
    from huggingface_hub import errors

    try:
        info = huggingface_hub.HfApi().repo_info(repo, timeout=HUB_TIMEOUT)
    except errors.RepositoryNotFoundError:
        return "error", (f"the hub repository {repo} of prepared artifacts does not exist, or is "
                         "private (then log in: `hf auth login`, or set HF_TOKEN). Check the name "
                         f"in PREPARED (or {VARIABLE}). " + todo)
    except Exception as err:  # noqa: BLE001 - no route, timeout, proxy: all mean "unreachable" here
        return "error", (f"the hub repository {repo} of prepared artifacts could not be reached "
                         f"within {HUB_TIMEOUT} s ({type(err).__name__}). " + todo)
    return "ok", (info.sha, [sibling.rfilename for sibling in info.siblings or []])


def _hub_fetch(repo: str):
    def fetch(rel: str, staging: Path, info_only: bool) -> Path | None:
        import huggingface_hub  # imported when used: only hub downloads need it, and it is slow to load

        revision, files = _hub_answer(repo)
        if f"{rel}/{INFO_FILE}" not in files:
            return None
        try:
            # One revision for both downloads: a stage republished meanwhile cannot mix two runs.
            huggingface_hub.snapshot_download(
                repo, revision=revision, local_dir=staging, etag_timeout=HUB_TIMEOUT,
                allow_patterns=[f"{rel}/{INFO_FILE}"] if info_only else [f"{rel}/*"])
        except Exception as err:  # noqa: BLE001
            raise PreparedUnavailable(
                f"downloading {rel} from the hub repository {repo} failed ({type(err).__name__}: "
                f"{err}); training it here instead. Run the cell again to retry.") from err
        return staging / rel

    return fetch


# --------------------------------------------------------------------------------------------
# Publishing (the instructor's side)
# --------------------------------------------------------------------------------------------


def publishable(run: Settings, stages: list[str] | None = None) -> tuple[list[str], list[str]]:
    """The stage folders of ``run`` worth publishing, prerequisites first, and the reasons the
    others are left out. A stage goes with its prerequisites (a student can use it only with
    them), and only when it was built from the very builds that sit beside it."""
    root = run.stage_dir("_").parent
    infos = {d.name: read_info(d) for d in sorted(root.iterdir())
             if d.is_dir() and not d.name.startswith(".")} if root.is_dir() else {}
    wanted = list(stages) if stages else list(infos)
    order: list[str] = []
    skipped: list[str] = []

    def visit(name: str, needed_by: str | None) -> bool:
        if name in order:
            return True
        info = infos.get(name)
        why = None
        if info is None:
            why = ("not trained here" if name not in infos else "incomplete or corrupt")
        elif damage := _damage(root / name, info):
            why = f"damaged ({damage})"
        else:
            for prerequisite, build_id in info["settings"].get("requires", {}).items():
                if not visit(prerequisite, name):
                    why = f"its prerequisite {prerequisite} cannot be published"
                    break
                if infos[prerequisite]["build_id"] != build_id:
                    why = (f"it was built from an earlier {prerequisite}, since retrained; run "
                           f"load_or_train({name!r}) to rebuild it, then publish again")
                    break
        if why:
            note = f"{name}: {why}" + (f" (needed by {needed_by})" if needed_by else "")
            if note not in skipped:
                skipped.append(note)
            return False
        order.append(name)
        return True

    for name in wanted:
        visit(name, None)
    return order, skipped


def publish(repo: str, stages: list[str] | None = None, *, run: Settings | None = None,
            private: bool | None = None, token: str | None = None) -> list[str]:
    """Upload the stages of ``run`` (default: the current settings) to the hub repository
    ``repo``, or copy them into a folder when ``repo`` is a path. Returns the stages published."""
    run = run or current_settings()
    root = run.stage_dir("_").parent
    order, skipped = publishable(run, stages)
    for note in skipped:
        print("not published:", note)
    if not order:
        raise PreparedUnavailable(
            f"nothing to publish in {root}: train the stages first (e.g. python -m helpers.course "
            f"--profile {run.profile}{' --fast' if run.fast else ''}), then publish again.")
    if _is_local(repo):
        for name in order:
            folder = Path(repo).expanduser() / root.name / name
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(root / name, folder)
            print(f"copied {root.name}/{name} to {folder}")
        return order

    import huggingface_hub  # imported when used: only publishing to the hub needs it

    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - not logged in, no write access, offline
        raise PreparedUnavailable(
            f"could not create or open the hub repository {repo} ({type(err).__name__}: {err}). "
            "Log in with a token that can write to it (`hf auth login`, or set HF_TOKEN), and "
            "check that you are online.") from err
    for name in order:
        build_id = json.loads((root / name / "stage.json").read_text())["build_id"]
        api.upload_folder(repo_id=repo, folder_path=str(root / name), path_in_repo=f"{root.name}/{name}",
                          commit_message=f"{root.name}/{name}: build {build_id}",
                          delete_patterns="*")  # files of an earlier publication of this stage go
        print(f"uploaded {root.name}/{name} (build {build_id})")
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.prepared_artifacts",
        description="Publish the trained stages of a run, for students to download instead of training.")
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="upload artifacts/<profile>/<stage>/ folders")
    pub.add_argument("--repo", required=True,
                     help="a Hugging Face Hub repository (user/name; created if missing), or a folder")
    pub.add_argument("--profile", choices=PROFILES, help="default: $COURSE_PROFILE or tiny")
    pub.add_argument("--fast", action="store_true", help="publish the fast-mode artifacts")
    pub.add_argument("--stages", nargs="+", help="only these stages (and their prerequisites)")
    pub.add_argument("--private", action="store_true", help="create the repository private")
    args = parser.parse_args(argv)

    if args.profile:
        os.environ["COURSE_PROFILE"] = args.profile
    if args.fast:
        os.environ["COURSE_FAST"] = "1"
    try:
        published = publish(args.repo, args.stages, private=args.private or None)
    except PreparedUnavailable as err:
        print(err)
        return 1
    print(f"\npublished {len(published)} stage(s): {', '.join(published)}. Students use them with "
          f'PREPARED = "{args.repo}" in a notebook\'s setup cell (or {VARIABLE}={args.repo}).')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
