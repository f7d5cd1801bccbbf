"""The Kubernetes manifests (infra/kuberay, infra/mlflow) parse and carry the fields that matter."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "infra" / "kuberay"
MLFLOW = ROOT / "infra" / "mlflow"


def _load_all(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML documents"
    return docs


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = _load_all(KUBERAY / "raycluster.yaml")
    return doc


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (doc,) = _load_all(KUBERAY / "rayjob.yaml")
    return doc


def _container(template: dict) -> dict:
    (container,) = template["spec"]["containers"]
    return container


def test_raycluster_autoscaling_v2_and_idle_head(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__, "image Ray == cluster Ray == the Ray tested here"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head must schedule no training work"
    head_container = _container(head["template"])
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "no public head service"


def test_raycluster_gpu_worker_groups(raycluster):
    groups = raycluster["spec"]["workerGroupSpecs"]
    head_image = _container(raycluster["spec"]["headGroupSpec"]["template"])["image"]
    gpus = set()
    for group in groups:
        name = group["groupName"]
        assert group["minReplicas"] == 0, f"{name}: scale from zero"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert group["maxReplicas"] >= 1, name
        template = group["template"]
        container = _container(template)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        n_gpu = int(limits["nvidia.com/gpu"])
        assert n_gpu >= 1 and int(requests["nvidia.com/gpu"]) == n_gpu, f"{name}: GPU limit == request"
        gpus.add(n_gpu)
        tolerations = template["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations), name
        assert container["image"] == head_image, f"{name}: one image for the whole cluster"
        assert template["spec"]["serviceAccountName"], f"{name}: S3 through the pod's IAM role"
    assert {1, 8} <= gpus


def test_rayjob_runs_training_on_the_cluster(raycluster, rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == raycluster["metadata"]["name"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipeline.train"]
    flags = {a for a in argv if a.startswith("--")}
    assert {"--storage", "--run-name", "--workers"} <= flags, "resume needs a fixed storage + run name"
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")


def _submit_commands(text: str) -> list[list[str]]:
    """Every `python -m pipeline.train ...` command in a file's text (line continuations joined)."""
    joined = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    return [shlex.split(m.group(0))[3:] for m in re.finditer(r"python -m pipeline\.train[^\n]*", joined)]


def test_documented_train_commands_parse(rayjob):
    from pipeline.train import make_parser

    commands = [shlex.split(rayjob["spec"]["entrypoint"])[3:]]
    commands += _submit_commands((ROOT / "ray_cluster.yaml").read_text())
    assert len(commands) >= 2
    parser = make_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # argparse exits (SystemExit) on an unknown flag or a bad value
        assert args.storage.startswith("s3://") and args.run_name, argv


def test_manifests_hold_no_secrets():
    for path in [*KUBERAY.glob("*.yaml"), *MLFLOW.glob("*"), ROOT / "ray_cluster.yaml"]:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{path}: an AWS access key id"
        assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text, path


def test_mlflow_server_manifest():
    docs = {d["kind"]: d for d in _load_all(MLFLOW / "mlflow.yaml")}
    assert {"ServiceAccount", "Deployment", "Service"} <= set(docs)
    container = _container(docs["Deployment"]["spec"]["template"])
    args = container["args"]
    assert args[:2] == ["mlflow", "server"]
    opts = dict(a.split("=", 1) for a in args[2:] if "=" in a)
    assert opts["--backend-store-uri"].startswith("postgresql://$(PGUSER):$(PGPASSWORD)@")
    assert opts["--artifacts-destination"].startswith("s3://")
    assert "--serve-artifacts" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"], "the DB password comes from a Secret"
    assert docs["Service"]["spec"]["type"] == "ClusterIP"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["template"]["metadata"]["labels"]

    # Every option we pass is one the installed `mlflow server` accepts.
    from mlflow.cli import server

    known = {opt for param in server.params for opt in param.opts + param.secondary_opts}
    for arg in args[2:]:
        assert arg.split("=", 1)[0] in known, f"`mlflow server` has no option {arg.split('=', 1)[0]}"
    dockerfile = (MLFLOW / "Dockerfile").read_text()
    assert "psycopg2" in dockerfile and "boto3" in dockerfile
