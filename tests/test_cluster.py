"""cluster.yaml passes Ray's own cluster-config schema check, and the check catches broken variants."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO



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
