"""Every notebook in notebooks/ executes from top to bottom without an error, each in well under a minute."""

import importlib
import os
import re
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 120  # per notebook; each takes a few seconds on two cores


#: set where the notebooks must run (CI installs the ``notebooks`` extra): a missing package fails, not skips
REQUIRED = os.environ.get("PERFSIM_REQUIRE_NOTEBOOKS") == "1"


def _need(module: str):
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module)


def test_the_notebooks_extra_installs_what_runs_them():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {re.match(r"[A-Za-z0-9_-]+", r).group() for r in extras["notebooks"]}
    assert {"nbclient", "nbformat", "ipykernel", "nbconvert"} <= names  # nbconvert: `jupyter nbconvert --execute`
    assert any("notebooks" in r for r in extras["test"])  # the test extra (what CI installs) pulls them in


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = _need("nbformat")
    nbclient = _need("nbclient")
    _need("ipykernel")
    root = str(path.parent.parent)
    # the kernel imports this checkout's perfsim; files the notebook writes land in tmp_path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    assert elapsed < TIMEOUT_S
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # no warning reaches the reader (pandas' PerformanceWarning of a fragmented frame, a deprecation, ...)
    warned = [o["text"] for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.get("name") == "stderr" and "Warning" in o["text"]]
    assert not warned, warned
