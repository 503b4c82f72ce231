"""Where a result came from: the code version, the library versions and the device it ran on.

Every trial record (``trials/<id>/result.json`` ``provenance``), every W&B run's config
(``provenance.*`` keys), every ``pielab train`` run folder (``summary.json`` and ``config.yaml``) and
every exported config carries one :func:`collect` dict::

    {"code": "8aab583-dirty",                      # git describe --always --dirty of the pielab tree,
                                                   # else "pielab 0.1.0" (the installed package)
     "versions": {"python": "3.12.3", "torch": "2.14.1", "torchvision": "0.29.1",
                  "ray": "2.60.0", "optuna": "5.0.0", "wandb": "0.31.0"},   # absent when not installed
     "device": {"type": "cpu", "name": "AMD EPYC 7B13", "cuda": None}}     # or cuda, GPU name, CUDA version

Versions are read from the installed distributions' metadata (:mod:`importlib.metadata`): ray, optuna
and wandb are never imported here, so ``pielab train`` collects its provenance on a machine without
them (their versions are then simply absent). The device is the one the run trained on: a sweep
trial collects it in its own process (:func:`pielab.train.fit`) and hands it to the driver with its
first result, so a trial that ran on a GPU node says so, not the driver's CPU.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# The libraries whose versions are recorded, in this order (python first).
LIBRARIES = ("torch", "torchvision", "ray", "optuna", "wandb")
# The top-level key of a saved or exported config that holds a provenance dict (pielab.config accepts it).
KEY = "provenance"

_SOURCE = Path(__file__).resolve().parent  # the pielab package folder


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty`` of the repository holding this pielab package (``8aab583-dirty``),
    or ``pielab <version>`` of the installed distribution when the package is not in a git work tree
    (or git is missing); ``pielab unknown`` when neither is known. Memoised per process."""
    try:
        top = subprocess.run(["git", "-C", str(_SOURCE), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        # Only the repository that holds this very package: a venv inside someone else's repo is not ours.
        if top.returncode == 0 and Path(top.stdout.strip(), "pielab").resolve() == _SOURCE:
            described = subprocess.run(["git", "-C", str(_SOURCE), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True, timeout=10)
            if described.returncode == 0 and described.stdout.strip():
                return described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"pielab {importlib.metadata.version('pielab')}"
    except importlib.metadata.PackageNotFoundError:
        return "pielab unknown"


def library_versions() -> dict[str, str]:
    """``{"python": "3.12.3", "torch": ..., ...}`` for the libraries of :data:`LIBRARIES` that are installed."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``model name``), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info(device: Any = None) -> dict[str, Any]:
    """The device a run trains on: ``{"type": "cuda", "name": "NVIDIA H200", "cuda": "12.8"}`` or
    ``{"type": "cpu", "name": <CPU model>, "cuda": None, "cores": 16}``.

    ``device``: a ``torch.device`` or its text (``cuda:1``); None means CPU. torch is imported only
    for a CUDA device.
    """
    text = str(device) if device is not None else "cpu"
    if text.startswith("cuda"):
        import torch

        index = int(text.split(":", 1)[1]) if ":" in text else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "cuda": torch.version.cuda}
    return {"type": "cpu", "name": cpu_model(), "cuda": None, "cores": os.cpu_count()}


def collect(device: Any = None) -> dict[str, Any]:
    """The provenance of a run on ``device`` in this process (module docstring's shape)."""
    return {"code": code_version(), "versions": library_versions(), "device": device_info(device)}


def describe_device(device: dict[str, Any] | None) -> str:
    """``NVIDIA H200 (CUDA 12.8)`` or ``CPU AMD EPYC 7B13 (16 cores)``; ``?`` when unknown."""
    if not isinstance(device, dict):
        return "?"
    if device.get("type") == "cuda":
        return f"{device.get('name')} (CUDA {device.get('cuda')})"
    cores = f" ({device['cores']} cores)" if device.get("cores") else ""
    return f"CPU {device.get('name')}{cores}"


def describe_versions(prov: dict[str, Any] | None) -> str:
    """``code 8aab583, python 3.12.3, torch 2.14.1, ...``: one line for reports and warnings."""
    if not isinstance(prov, dict):
        return "unknown"
    versions = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
    parts = [f"code {prov.get('code')}"] + [f"{k} {v}" for k, v in versions.items()]
    return ", ".join(parts)


def flat(prov: dict[str, Any] | None) -> dict[str, Any]:
    """``{"provenance.code": ..., "provenance.torch": ..., "provenance.device": "NVIDIA H200 (CUDA 12.8)"}``:
    flat keys for a W&B run's config (searchable and filterable there)."""
    if not isinstance(prov, dict):
        return {}
    out: dict[str, Any] = {f"{KEY}.code": prov.get("code")}
    for name, version in (prov.get("versions") or {}).items():
        out[f"{KEY}.{name}"] = version
    out[f"{KEY}.device"] = describe_device(prov.get("device"))
    return out


def differences(recorded: dict[str, Any] | None, current: dict[str, Any] | None = None) -> list[str]:
    """What differs between a recorded provenance and this process's: ``["torch 2.14.1 -> 2.13.0", ...]``.

    The code version and every library recorded on both sides are compared. A library missing on one
    side is not a difference: ``pielab train`` runs without ray, optuna and wandb, which never touch
    the training. The device is not compared (moving a config to another machine is the point).
    """
    if not isinstance(recorded, dict):
        return []
    current = current if current is not None else {"code": code_version(), "versions": library_versions()}
    out = []
    if recorded.get("code") and recorded.get("code") != current.get("code"):
        out.append(f"code {recorded.get('code')} -> {current.get('code')}")
    then = recorded.get("versions") if isinstance(recorded.get("versions"), dict) else {}
    now = current.get("versions") or {}
    for name, version in then.items():
        if name in now and str(version) != str(now[name]):
            out.append(f"{name} {version} -> {now[name]}")
    return out


def mismatch_warning(recorded: dict[str, Any] | None, source: str) -> str | None:
    """The one warning line ``pielab train`` prints when ``source``'s recorded versions differ from
    this machine's, or None when they match (or nothing is recorded)."""
    diffs = differences(recorded)
    if not diffs:
        return None
    return (f"warning: {source} was recorded with other versions ({'; '.join(diffs)}): "
            "results may differ; training anyway")
