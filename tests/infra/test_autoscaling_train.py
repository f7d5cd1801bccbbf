"""The real training command on a simulated autoscaling GPU cluster (issue 16).

`ray job submit -- python -m pipeline.train --data …`, with no device flag, on a head that has no GPU and is started
the way ray_cluster.yaml's head start command starts it (its environment assignments and --labels/--resources), with
the 1-GPU node types of ray_cluster.yaml at min_workers 0, under Ray's fake multi-node provider (its v1 autoscaler,
which tells a job nothing about launchable node types). The job must print its choice line first (GPU, and the
reason: the head's label), and the autoscaler must launch GPU nodes on which the Ray Train workers are placed.

The fake GPUs cannot run CUDA, so the test ends the job as soon as both workers are placed on GPU nodes. (A worker
that Ray gives a GPU that CUDA does not have does not fall back to CPU compute: its NCCL process group cannot
start and the run fails with that error -- a GPU run never turns silently into a CPU run. docs/cluster.md.)

The offline tests check that the clusters we ship declare their launchable GPUs correctly and that every
documented cluster command is one this test's logic covers (no device flag, submitted to a declaring cluster).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline.training import devices
from tests import services
from tests.infra.test_autoscaling import start_fake_autoscaling_head, stop_fake_autoscaling_head

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
KUBERAY = ROOT / "infra" / "kuberay"
# Never upload the virtualenv, run outputs, databases or git objects with the working directory.
EXCLUDES = [".venv", ".git", "outputs", "mlruns", "*.db", ".cache", "__pycache__", ".pytest_cache", "*.egg-info"]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "cluster.md", CLUSTER_YAML, *sorted((ROOT / "infra").rglob("*"))]


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def head_declaration(cluster: dict) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, --labels/--resources flags) of the `ray start --head` in a cluster launcher
    file's head_start_ray_commands: what the head declares to the jobs that run on it."""
    env: dict[str, str] = {}
    flags: list[str] = []
    found = False
    for command in cluster["head_start_ray_commands"]:
        for part in re.split(r";|&&", command):
            tokens = shlex.split(part)
            if tokens[:1] == ["export"]:
                env.update(t.split("=", 1) for t in tokens[1:] if "=" in t)
                continue
            i = 0
            while i < len(tokens) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[i]):
                env.update([tokens[i].split("=", 1)])
                i += 1
            if tokens[i:i + 3] != ["ray", "start", "--head"]:
                continue
            found = True
            args = tokens[i + 3:]
            for j, t in enumerate(args):
                if t.startswith(("--labels=", "--resources=")):
                    flags.append(t)
                elif t in ("--labels", "--resources"):
                    flags.append(f"{t}={args[j + 1]}")
    assert found, "no `ray start --head` in head_start_ray_commands"
    return env, flags


def _declared_label(flags: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for f in flags:
        if f.startswith("--labels="):
            labels.update(pair.split("=", 1) for pair in f[len("--labels="):].split(","))
    return labels


# ------------------------------------------------------------------------------------------------------------------
# Offline: the shipped clusters declare what their autoscaler can launch; the documented commands are covered.


def test_ray_cluster_yaml_declares_its_launchable_gpus():
    cluster = _cluster()
    env, flags = head_declaration(cluster)
    declared = _declared_label(flags).get(devices.LABEL) or env.get(devices.ENV_VAR)
    assert declared is not None, f"the head start command declares neither {devices.LABEL} nor {devices.ENV_VAR}"
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"].get("GPU", 0) == 0, "the head has no GPU"
    expected = devices.max_cluster_gpus({k: v for k, v in types.items() if k != cluster["head_node_type"]},
                                        cluster["max_workers"])
    assert int(declared) == expected > 0, f"declared {declared}, the node types allow {expected}"


def test_kuberay_head_declares_its_launchable_gpus():
    (rc,) = [d for d in yaml.safe_load_all((KUBERAY / "raycluster.yaml").read_text()) if d]
    (head,) = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in head.get("env", [])}
    expected = sum(int(g["maxReplicas"]) * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                                .get("nvidia.com/gpu", 0)) for g in rc["spec"]["workerGroupSpecs"])
    assert int(env[devices.ENV_VAR]) == expected > 0


def _train_commands(text: str) -> list[list[str]]:
    """Every `python -m pipeline.train …` in a text (line continuations joined), as argv after the module."""
    joined = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    return [shlex.split(m.group(0).replace("…", ""), comments=True)[3:]
            for m in re.finditer(r"python -m pipeline\.train\b[^\n`]*", joined)]


def test_documented_cluster_commands_choose_the_device_like_this_test():
    """No documented training command forces the device: each one, submitted to a cluster we ship, takes the
    path this module's fake-cluster test runs (no flag -> the head's declaration -> GPUs)."""
    commands = []
    for path in DOCUMENTS:
        if path.is_file():
            commands += [(path.relative_to(ROOT), argv) for argv in _train_commands(path.read_text(errors="replace"))]
    (job,) = [d for d in yaml.safe_load_all((KUBERAY / "rayjob.yaml").read_text()) if d]
    commands.append(("infra/kuberay/rayjob.yaml", shlex.split(job["spec"]["entrypoint"])[3:]))  # folded YAML
    assert len(commands) >= 5
    for where, argv in commands:
        assert not any(a.startswith("--use-gpu") for a in argv), f"{where}: {argv} forces the device"


# ------------------------------------------------------------------------------------------------------------------
# The fake autoscaling cluster.


@pytest.mark.slow
def test_train_job_without_device_flag_launches_gpu_nodes(tmp_path, session_dir):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_nodes

    from pipeline.data import ensure_demo_shards

    cluster = _cluster()
    env, flags = head_declaration(cluster)
    head_type = cluster["available_node_types"][cluster["head_node_type"]]
    # ray_cluster.yaml's 1-GPU node types (resources as declared), at most 2 nodes on this machine.
    gpu_types = {name: {"resources": dict(t["resources"]), "node_config": {}, "min_workers": 0, "max_workers": 2}
                 for name, t in cluster["available_node_types"].items()
                 if t["resources"].get("GPU", 0) == 1 and t.get("min_workers", 0) == 0}
    assert gpu_types, "ray_cluster.yaml has no 1-GPU node type with min_workers 0"
    data = ensure_demo_shards(session_dir / "autoscale-shards", 16, max_images=32, progress=False)
    # The job's `python` is this virtualenv's, as the image's is on a real cluster.
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    head = start_fake_autoscaling_head(tmp_path / "head", head_resources=dict(head_type["resources"]),
                                       worker_types=gpu_types, max_workers=2, extra_flags=flags, extra_env=env)
    job = f"train-{uuid.uuid4().hex[:8]}"
    placed: dict[str, str] = {}
    t0 = time.monotonic()
    try:
        url = head.info["dashboard_url"]
        entrypoint = ["python", "-m", "pipeline.train", "--data", data, "--cbase", "256", "--cmax", "16",
                      "--batch", "8", "--kimg", "1", "--workers", "2", "--storage", str(tmp_path / "runs"),
                      "--run-name", "autoscale", "--tracking", "0"]
        submit = [services.venv_bin("ray"), "job", "submit", "--address", url, "--submission-id", job, "--no-wait",
                  "--working-dir", str(ROOT), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--",
                  *entrypoint]
        sub_env = {k: v for k, v in head.info["env"].items() if k != "RAY_FAKE_CLUSTER"}
        deadline = time.monotonic() + 120
        while True:  # the head's job agent may come up after its dashboard
            proc = subprocess.run(submit, env=sub_env, capture_output=True, text=True, timeout=120)
            if proc.returncode == 0 or time.monotonic() > deadline or "No available agent" not in proc.stdout + \
                    proc.stderr:
                break
            time.sleep(3)
        assert proc.returncode == 0, f"ray job submit failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        client = JobSubmissionClient(url)
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline:
            status = client.get_job_status(job)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            gpu_nodes = {n.node_id for n in list_nodes(address=url, raise_on_missing_output=False)
                         if (n.resources_total or {}).get("GPU", 0) >= 1}
            workers = [a for a in list_actors(address=url, raise_on_missing_output=False, detail=False)
                       if "TrainWorker" in (a.class_name or "")]
            placed = {a.actor_id: a.node_id for a in workers if a.node_id in gpu_nodes}
            if len(placed) >= 2:
                break
            time.sleep(1)
        seconds = time.monotonic() - t0
        if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            client.stop_job(job)  # the workers are placed: nothing more to learn on fake GPUs
            stop_deadline = time.monotonic() + 60
            while time.monotonic() < stop_deadline and client.get_job_status(job) not in (
                    JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                time.sleep(1)
        logs = client.get_job_logs(job)
    finally:
        tree = stop_fake_autoscaling_head(head)

    ours = [line for line in logs.splitlines() if line.startswith(("device: ", "run ", "  checkpoints:"))]
    choice = next((line for line in ours if line.startswith("device: ")), None)
    print(f"placed on GPU nodes after {seconds:.0f} s; choice line: {choice}")
    assert len(placed) >= 2, f"the workers were not placed on GPU nodes (job {status}):\n{logs[-4000:]}"
    assert len(set(placed.values())) == 2, "one worker per launched 1-GPU node"
    assert choice is not None and ours[0] == choice, f"the choice line must come first:\n{logs[-4000:]}"
    assert choice.startswith("device: GPU (1 GPU per worker, NCCL): the cluster has no GPU now, but its autoscaler "
                             "can launch up to"), choice
    assert devices.LABEL in choice or devices.ENV_VAR in choice, "the reason names the head's declaration"
    assert not [p for p in tree if services.alive(p)], "processes left after stopping the head by PID"
