"""docs/notebooks/explore_sweep.ipynb runs top to bottom in a real Jupyter kernel (nbclient, ipykernel) on this venv's
interpreter, with its two tiny sweeps under tmp_path; and it is committed without outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import REPO

NOTEBOOK = REPO / "docs" / "notebooks" / "explore_sweep.ipynb"


def test_the_committed_notebook_has_no_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{NOTEBOOK.name}: cells {dirty} hold outputs; strip them (jupyter nbconvert --clear-output)"


def test_the_notebook_runs_top_to_bottom(tmp_path, shared_data_dir, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    monkeypatch.setenv("PIELAB_DATA_DIR", str(shared_data_dir))
    monkeypatch.setenv("PIELAB_NOTEBOOK_DIR", str(tmp_path / "sweeps"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the kernel's and Ray's files under HOME
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the kernel runs on this interpreter (the venv under test), whatever the kernelspec on PATH says
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).name.startswith("python"), spec.argv
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.kernel_manager_class = _ThisInterpreter
    client.execute()
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert f"python {sys.executable}" in printed, printed[:500]
    images = sum(1 for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 4, f"{images} figures"  # depth, curves, comparison, Optuna's history
    made = sorted(p.name for p in (tmp_path / "sweeps").iterdir())
    assert made == ["lr1e-3", "lr3e-3"], made
    import pielab

    for name in made:
        sweep = pielab.load_sweep(tmp_path / "sweeps" / name)
        assert sweep.status == "finished" and len(sweep.trials_dataframe()) == 4


def _kernel_manager():
    from jupyter_client.manager import KernelManager

    class ThisInterpreter(KernelManager):
        """The python3 kernel started with ``sys.executable``: the venv whose pielab is under test."""

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, *cmd[1:]] if cmd and Path(cmd[0]).name.startswith("python") else cmd

    return ThisInterpreter


try:
    _ThisInterpreter = _kernel_manager()
except ImportError:  # nbclient missing: the run test fails on its import with the reason
    _ThisInterpreter = None
