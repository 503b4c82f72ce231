"""A local ``pielab sweep`` keeps every Ray socket on 127.0.0.1, as the user runs it from a shell.

The sweep runs through the console script in an environment without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
(a shell does not have it; Ray reads it only when it is first imported, so the product must set it
before then). While it runs, ``ss`` is polled for the TCP listeners and connections of the sweep's
process tree (the driver and every descendant: gcs_server, raylet, workers).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import yaml

from helpers import LOOPBACK, process_tree, tree_sockets


def tiny_cifar_spec(cifar_path: str) -> dict:
    return {
        "name": "loopback",
        "base": {
            "model": {"name": "myresnet34", "width": 4},
            "data": {"path": cifar_path, "train_size": 100, "val_size": 50, "test_size": 50},
            "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
        },
        "space": {"parameters": {"model.residual": {"type": "bool"}}},
        "search": {"algorithm": "grid", "seed": 0},
        "scheduler": {"name": "fifo"},
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": False},
    }


def test_local_sweep_from_a_shell_listens_and_connects_only_on_loopback(tmp_path, cifar_path, pielab_exe):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_cifar_spec(cifar_path), sort_keys=False))
    env = dict(os.environ)  # keeps PYTHONPATH: the worktree's code runs
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # as in a shell (importing pielab.sweep here set it)
    env.pop("RAY_ADDRESS", None)
    env["HOME"] = str(tmp_path / "home")  # Ray's auth token and session files
    Path(env["HOME"]).mkdir()
    proc = subprocess.Popen([*pielab_exe, "sweep", str(spec_path), "--out", str(tmp_path / "sweep")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: set[tuple[str, str, str]] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(tree_sockets(process_tree(proc.pid)))
            stop.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop.set()
        watcher.join()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    listeners = {name for kind, _, name in seen if kind == "listen"}
    assert {"gcs_server", "raylet"} & listeners, seen  # the watch saw Ray's own servers: not vacuous
    off = sorted(s for s in seen if not LOOPBACK.match(s[1]))
    assert not off, f"sockets off loopback: {off}"
