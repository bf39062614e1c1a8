"""Committed notebooks carry no outputs: students start from a clean page, and diffs stay readable.

`nbstripout --install` (once per clone) strips them automatically when you stage a notebook.
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL_NOTEBOOKS = sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_there_are_notebooks():
    assert ALL_NOTEBOOKS, f"no notebooks found in {NOTEBOOKS}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs_and_no_execution_counts(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i + 1
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; "
        f"run `nbstripout {path}` (or `nbstripout --install` once, then stage it again)"
    )
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state; run nbstripout"
