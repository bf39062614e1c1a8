"""Exit 0 when this checkout is already installed with everything pyproject.toml asks for.

.ci/run uses it to skip `pip install -e ".[dev]"` (which rebuilds the package and fetches its
build backend every time) when nothing changed: the editable install must point at this very
checkout, its recorded requirements must be pyproject's, and each must be satisfied.
"""

import importlib.metadata as md
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fail(reason: str) -> None:
    print(f"needs install: {reason}")
    sys.exit(1)


try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh machine: nothing is installed yet
    fail("packaging is not installed")


project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
try:
    dist = md.distribution(project["name"])
except md.PackageNotFoundError:
    fail(f"{project['name']} is not installed")

direct = json.loads(dist.read_text("direct_url.json") or "{}")
if not direct.get("dir_info", {}).get("editable") or direct.get("url") != ROOT.as_uri():
    fail(f"the installed package is not an editable install of {ROOT}")
if dist.version != project["version"]:
    fail(f"installed version {dist.version} != {project['version']}")

recorded = {str(Requirement(r)).split(";")[0].strip() for r in dist.requires or []}
for spec in wanted:
    req = Requirement(spec)
    if str(req) not in recorded:
        fail(f"pyproject.toml changed since the install ({req})")
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        fail(f"{req.name} is missing")
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        fail(f"{req.name} {version} does not satisfy {req.specifier}")
print("already installed: skipping pip install")
