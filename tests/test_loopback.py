"""A local ``pielab sweep`` keeps every Ray socket on 127.0.0.1, as the user runs it from a shell.

The sweep runs through the console script in an environment without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
(a shell does not have it; Ray reads it only when it is first imported, so the product must set it
before then). While it runs, ``ss`` is polled for the TCP listeners and connections of the sweep's
process tree (the driver and every descendant: gcs_server, raylet, workers).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import yaml

LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")


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


def process_tree(root_pid: int) -> set[int]:
    """``root_pid`` and its descendants, from /proc (parent pid is field 4 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_sockets(pids: set[int]) -> set[tuple[str, str, str]]:
    """(kind, address, process name) for every TCP listener (its local address) and TCP connection
    (both ends) owned by a process in ``pids``."""
    out = set()
    for kind, flags in (("listen", "-tlnpH"), ("conn", "-tnpH")):
        text = subprocess.run(["ss", flags], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if not owners & pids:
                continue
            parts = line.split()
            name = re.search(r'\(\("([^"]+)"', line)
            ends = (parts[3],) if kind == "listen" else (parts[3], parts[4])
            for address in ends:
                out.add((kind, address, name.group(1) if name else "?"))
    return out


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
