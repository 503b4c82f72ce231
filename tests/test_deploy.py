"""deploy/k8s/rayjob.yaml (a KubeRay RayJob) is what KubeRay and pielab expect, checked without a cluster.

* The pod templates deserialize into the ``kubernetes`` client's ``V1PodTemplateSpec`` and serialize
  back unchanged (a misspelt or misplaced field would be dropped on the way, a wrong type raises).
* The RayJob fields are known to KubeRay's ray.io/v1 types (``ray-operator/apis/ray/v1``), and the
  ones pielab relies on are set: the cluster is deleted when the sweep ends, with a TTL and a deadline.
* The Ray version of the cluster and of the image is the one pielab is tested with (the installed ray).
* Secrets reach the pods only through ``secretKeyRef``; no value and no password in a URL is inline.
* The entrypoint is a ``pielab sweep`` command line that pielab's own parser accepts, on a spec that
  pielab's own validation accepts with the entrypoint's ``--set`` overrides.

Each check is also shown to fail on a broken copy of the manifest.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "k8s" / "rayjob.yaml"
DOCKERFILE = REPO / "deploy" / "k8s" / "Dockerfile"

# Field names of KubeRay's ray.io/v1 types (RayJobSpec, RayClusterSpec, HeadGroupSpec, WorkerGroupSpec).
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
               "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
               "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}
RAYCLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                   "autoscalerOptions", "headServiceAnnotations", "suspend"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
                "scaleStrategy"}
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|PGPASS", re.IGNORECASE)
PASSWORD_IN_URL = re.compile(r"://[^/\s@:]+:[^/\s@]+@")


def ray_version() -> str:
    import ray

    return ray.__version__


def pod_template_problems(where: str, template: dict) -> list[str]:
    from kubernetes.client import ApiClient

    client = ApiClient()
    try:
        model = client.deserialize(json.dumps(template), "V1PodTemplateSpec", "application/json")
    except Exception as exc:  # pydantic's ValidationError: a wrong type or a missing required field
        return [f"{where}: not a V1PodTemplateSpec: {str(exc).splitlines()[0]} {str(exc)[:300]}"]
    back = client.sanitize_for_serialization(model)
    if back != template:
        return [f"{where}: fields the kubernetes models do not know (dropped on the way): "
                f"{json.dumps(template)[:200]} != {json.dumps(back)[:200]}"]
    return []


def containers(template: dict) -> list[dict]:
    found = template.get("spec", {}).get("containers", [])
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def secret_problems(where: str, template: dict) -> list[str]:
    problems = []
    for c in containers(template):
        for env in c.get("env", []):
            name = env.get("name", "")
            if "value" in env and (SECRET_NAME.search(name) or PASSWORD_IN_URL.search(str(env["value"]))):
                problems.append(f"{where}: {name} is inline; use valueFrom.secretKeyRef")
            if SECRET_NAME.search(name) and "secretKeyRef" not in env.get("valueFrom", {}):
                problems.append(f"{where}: {name} does not come from a Secret (valueFrom.secretKeyRef)")
    return problems


def gpus(template: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers(template))


def sweep_args(entrypoint: str) -> list[str]:
    """The arguments after ``pielab sweep`` in the entrypoint's shell command."""
    words = shlex.split(entrypoint)
    for i in range(len(words) - 1):
        if Path(words[i]).name == "pielab" and words[i + 1] == "sweep":
            end = next((j for j in range(i + 2, len(words)) if words[j] in ("&&", ";", "||", "|")), len(words))
            return words[i + 2:end]
    raise ValueError(f"no `pielab sweep` in the entrypoint: {entrypoint}")


def rayjob_problems(doc: dict) -> list[str]:
    """Everything wrong with a RayJob manifest for pielab (empty: fine)."""
    problems = []
    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != "RayJob":
        problems.append(f"apiVersion/kind: {doc.get('apiVersion')}/{doc.get('kind')}, expected ray.io/v1 RayJob")
    spec = doc.get("spec", {})
    cluster = spec.get("rayClusterSpec", {})
    head = cluster.get("headGroupSpec", {})
    workers = cluster.get("workerGroupSpecs", [])
    for where, fields, known in [("spec", spec, RAYJOB_SPEC), ("rayClusterSpec", cluster, RAYCLUSTER_SPEC),
                                 ("headGroupSpec", head, HEAD_GROUP),
                                 *[(f"workerGroupSpecs[{i}]", w, WORKER_GROUP) for i, w in enumerate(workers)]]:
        unknown = set(fields) - known
        if unknown:
            problems.append(f"{where}: unknown fields {sorted(unknown)}")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("spec.shutdownAfterJobFinishes must be true (the cluster goes when the sweep ends)")
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds"):
        if not isinstance(spec.get(key), int) or isinstance(spec.get(key), bool) or spec[key] <= 0:
            problems.append(f"spec.{key} must be a positive integer")
    if spec.get("submissionMode", "K8sJobMode") not in ("K8sJobMode", "HTTPMode"):
        problems.append(f"spec.submissionMode {spec.get('submissionMode')}: KubeRay must submit the sweep")
    if cluster.get("rayVersion") != ray_version():
        problems.append(f"rayVersion {cluster.get('rayVersion')} != the tested ray {ray_version()}")
    templates = [("headGroupSpec", head.get("template", {}))] + \
                [(f"workerGroupSpecs[{i}]", w.get("template", {})) for i, w in enumerate(workers)]
    for where, template in templates:
        problems += pod_template_problems(where, template)
        problems += secret_problems(where, template)
        for c in containers(template):
            if f"ray{ray_version()}" not in c.get("image", "").rsplit(":", 1)[-1]:
                problems.append(f"{where}: image {c.get('image')} is not tagged with ray{ray_version()}")
    if gpus(head.get("template", {})):
        problems.append("the head asks for a GPU: it runs the driver, Optuna and W&B only")
    if not workers or not all(gpus(w.get("template", {})) >= 1 for w in workers):
        problems.append("every worker group needs nvidia.com/gpu limits")
    entrypoint = spec.get("entrypoint", "")
    if PASSWORD_IN_URL.search(entrypoint):
        problems.append("the entrypoint has a password in a URL: give it through PGPASSWORD from a Secret")
    try:
        problems += entrypoint_problems(sweep_args(entrypoint))
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def entrypoint_problems(args: list[str]) -> list[str]:
    from pielab.cli import build_parser
    from pielab.errors import PielabError
    from pielab.spec.sweep_spec import load_spec

    try:
        ns = build_parser().parse_args(["sweep", *args])
    except SystemExit:
        return [f"pielab's parser refuses `pielab sweep {shlex.join(args)}`"]
    problems = []
    if ns.address != "auto":
        problems.append(f"--address {ns.address}: the driver runs on the head; join its cluster with auto")
    if not ns.resume_if_exists or not ns.out:
        problems.append("--resume-if-exists --out DIR: a retried RayJob must continue the same sweep folder")
    elif not ns.out.startswith(("s3://", "gs://")):
        problems.append(f"--out {ns.out}: pods are deleted with the cluster; put the folder on object storage")
    try:
        load_spec(str(REPO / ns.spec), ns.set)
    except PielabError as exc:
        problems.append(f"the sweep spec with the entrypoint's --set: {exc}")
    return problems


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_rayjob_manifest_is_what_kuberay_and_pielab_expect(rayjob):
    assert rayjob_problems(rayjob) == []
    spec = rayjob["spec"]
    assert spec["ttlSecondsAfterFinished"] < spec["activeDeadlineSeconds"]
    env = {e["name"]: e for c in containers(spec["rayClusterSpec"]["headGroupSpec"]["template"]) for e in c["env"]}
    for name in ("WANDB_API_KEY", "PGPASSWORD"):  # the driver's secrets, on the head where it runs
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name


def test_image_is_built_on_the_tested_ray_and_python():
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray_version())}-{py}(-gpu|-cu\d+)?", base), base


BROKEN = {
    "inline secret": lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ["env"].append({"name": "WANDB_API_KEY", "value": "abc123"}),
    "password in the database URL": lambda d: d["spec"].update(
        entrypoint=d["spec"]["entrypoint"].replace("postgresql://pielab@", "postgresql://pielab:hunter2@")),
    "misspelt RayJob field": lambda d: d["spec"].update(shutdownAfterJobFinish=True),
    "no cluster deletion": lambda d: d["spec"].update(shutdownAfterJobFinishes=False),
    "no deadline": lambda d: d["spec"].pop("activeDeadlineSeconds"),
    "misspelt container field": lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    ["containers"][0].update(imagePullPolicyy="Always"),
    "wrong type in a pod template": lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    .update(containers={"name": "ray-head"}),
    "worker without a GPU": lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    ["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu"),
    "another Ray version": lambda d: d["spec"]["rayClusterSpec"].update(rayVersion="2.9.0"),
    "image of another Ray": lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    ["containers"][0].update(image="rayproject/ray:2.9.0-py311-gpu"),
    "a flag pielab does not have": lambda d: d["spec"].update(entrypoint=d["spec"]["entrypoint"] + " --gpus 4"),
    "a key the spec does not have": lambda d: d["spec"].update(
        entrypoint=d["spec"]["entrypoint"] + " --set storage.pth=s3://b/x"),
    "a local sweep folder": lambda d: d["spec"].update(
        entrypoint=d["spec"]["entrypoint"].replace("--out s3://", "--out /tmp/")),
    "driver starting its own Ray": lambda d: d["spec"].update(
        entrypoint=d["spec"]["entrypoint"].replace("--address auto", "")),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_checks_catch_a_broken_manifest(rayjob, name):
    broken = copy.deepcopy(rayjob)
    BROKEN[name](broken)
    assert rayjob_problems(broken), name
