"""cluster.yaml (AWS) and deploy/onprem.yaml (rented servers, Ray's local provider) pass Ray's own
cluster-config schema check, and the check catches broken variants of each."""

from __future__ import annotations

import copy

import pytest
import yaml

from helpers import REPO



def validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config fills Ray's provider defaults first; validate_config alone rejects every file.
    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid(cluster):
    validate(cluster)
    gpu_types = [t for t in cluster["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert any("pielab" in cmd for cmd in cluster["setup_commands"])
    assert all("0.0.0.0" not in cmd for cmd in cluster["head_start_ray_commands"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(head_node_type="missing.type"),
        lambda c: c.update(unknown_key=1),
        lambda c: c["available_node_types"]["ray.worker.gpu"].update(min_workerz=0),
    ],
)
def test_schema_check_catches_broken_variants(cluster, mutate):
    broken = copy.deepcopy(cluster)
    mutate(broken)
    from jsonschema.exceptions import ValidationError

    with pytest.raises((ValueError, ValidationError)):
        validate(broken)


# --------------------------------------------------------------------------- deploy/onprem.yaml


@pytest.fixture(scope="module")
def onprem() -> dict:
    return yaml.safe_load((REPO / "deploy" / "onprem.yaml").read_text())


def test_onprem_yaml_is_valid(onprem):
    """The rented-servers config: Ray's local provider prepares one node type from head_ip/worker_ips."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(onprem))
    validate_config(prepared)
    assert onprem["provider"]["type"] == "local"
    (node_type,) = prepared["available_node_types"].values()
    workers = len(onprem["provider"]["worker_ips"])
    assert node_type["min_workers"] == node_type["max_workers"] == workers  # every rented server stays in
    assert onprem["auth"]["ssh_user"] and onprem["auth"]["ssh_private_key"]
    setup = "\n".join(onprem["setup_commands"])
    assert "pip install" in setup and "pielab" in setup
    assert "PIELAB_CACHE_DIR=/mnt/lab/" in setup  # the processed-data cache on the shared mount
    assert "/mnt/lab/sweeps" in setup  # where the sweep folders go (--out /mnt/lab/sweeps/NAME)
    assert all("0.0.0.0" not in cmd for cmd in onprem["head_start_ray_commands"])
    start = onprem["head_start_ray_commands"] + onprem["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in start if "ray start" in cmd)
    assert onprem["file_mounts"]["~/.ray/auth_token"]  # one token on every server


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(unknown_key=1),
        lambda c: c["auth"].update(ssh_usr="pielab"),
        lambda c: c["provider"].pop("head_ip"),
        lambda c: c["provider"].update(worker_ips="192.168.10.12"),
        # the local provider makes its own node type; a hand-written one is refused
        lambda c: c.update(available_node_types={"gpu": {"node_config": {}, "resources": {"GPU": 1}}}),
    ],
    ids=["unknown key", "misspelt auth key", "no head_ip", "worker_ips not a list", "node types"],
)
def test_onprem_schema_check_catches_broken_variants(onprem, mutate):
    import click
    from jsonschema.exceptions import ValidationError

    broken = copy.deepcopy(onprem)
    mutate(broken)
    with pytest.raises((ValueError, ValidationError, click.ClickException)):
        validate(broken)
