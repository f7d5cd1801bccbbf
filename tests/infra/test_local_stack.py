"""infra/local/stack.sh: up, every service answers, a `ray job submit` job uses S3 + MLflow, down, nothing left;
up again on the same state: the data and the MLflow run are still there.

Slow (a Ray head, an MLflow server and SeaweedFS start for real: ~40 s idle machine, 2+ min on a busy one).
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests import services

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "local" / "stack.sh"

pytestmark = pytest.mark.slow

JOB = textwrap.dedent(
    """
    # Runs on the stack's Ray head: S3 and MLflow settings come from the head's environment.
    import boto3, mlflow, ray

    ray.init()
    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    boto3.client("s3").put_object(Bucket="stylegan3", Key="smoke/hello.txt", Body=b"from a ray job")
    mlflow.set_experiment("stack-smoke")
    with mlflow.start_run() as run:
        mlflow.log_metric("answer", 42.0)
        mlflow.log_text("artifact through the tracking server", "note.txt")
    print("RUN_ID", run.info.run_id)
    """
)


def _stack(cmd: str, state: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    # A clean environment: the test session's own RAY_/AWS_/MLFLOW_ settings must not leak into the stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    env.update(STACK_DIR=str(state), STACK_RAY_CPUS="2")
    return subprocess.run(["bash", str(STACK), cmd], env=env, capture_output=True, text=True, timeout=timeout)


def _parse_env(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", text, re.M))


def _recorded_trees(state: Path) -> dict[str, list[int]]:
    trees = {}
    for name in ("seaweedfs", "mlflow", "ray"):
        pid = int((state / f"{name}.pid").read_text().split()[0])
        trees[name] = services.process_tree(pid)
    return trees


def _leftovers(trees: dict[str, list[int]]) -> list[str]:
    """The recorded processes still running, with their command lines (for the failure message)."""
    out = []
    for name, tree in trees.items():
        for p in tree:
            if services.alive(p):
                try:
                    cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                out.append(f"{name}: pid {p}: {cmd[:200]}")
    return out


def _listening_addresses(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    addrs = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            addrs.append(line.split()[3])
    return addrs


def test_stack_up_job_down(tmp_path):
    state = tmp_path / "stack"
    trees: dict[str, list[int]] = {}
    try:
        up = _stack("up", state)
        assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout}\n{up.stderr}"
        trees = _recorded_trees(state)

        status = _stack("status", state, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("running") == 3

        env = _parse_env(_stack("env", state, timeout=30).stdout)
        assert set(env) >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI",
                            "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"}
        for key in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "RAY_API_SERVER_ADDRESS"):
            assert env[key].startswith("http://127.0.0.1:"), env[key]
        assert env["RAY_ADDRESS"].startswith("127.0.0.1:")

        # Every socket the three services listen on is on loopback.
        addrs = _listening_addresses({p for tree in trees.values() for p in tree})
        assert addrs, "found no listening sockets of the stack"
        exposed = [a for a in addrs if not a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))]
        assert not exposed, f"listening beyond loopback: {exposed}"

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
        assert {"stylegan3", "mlflow"} <= {b["Name"] for b in s3.list_buckets()["Buckets"]}
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
            assert r.status == 200

        # The README's flow: a job submitted to the head's job server, using S3 and MLflow from there.
        from ray.job_submission import JobStatus, JobSubmissionClient

        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "smoke_job.py").write_text(JOB)
        client = JobSubmissionClient(env["RAY_API_SERVER_ADDRESS"])
        job_id = client.submit_job(entrypoint="python smoke_job.py", runtime_env={"working_dir": str(job_dir)})
        deadline = time.monotonic() + 240
        while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.monotonic() < deadline, "the smoke job did not finish in 240 s"
            time.sleep(1)
        logs = client.get_job_logs(job_id)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs
        run_id = re.search(r"RUN_ID (\w+)", logs).group(1)

        assert s3.get_object(Bucket="stylegan3", Key="smoke/hello.txt")["Body"].read() == b"from a ray job"
        # The artifact went through the tracking server into the stack's S3 bucket.
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/").get("Contents", [])]
        assert any(run_id in k and k.endswith("note.txt") for k in keys), keys
    finally:
        down = _stack("down", state, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr

    leftover = _leftovers(trees)
    assert not leftover, f"processes left running after down: {leftover}\n{down.stderr}"
    assert not list(state.glob("*.pid"))
    assert _stack("status", state, timeout=60).returncode != 0

    # Up again on the same state dir (new ports): the data and the MLflow run are still there.
    try:
        again = _stack("up", state)
        assert again.returncode == 0, f"second up failed:\n{again.stdout}\n{again.stderr}"
        trees = _recorded_trees(state)
        env = _parse_env(_stack("env", state, timeout=30).stdout)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
        assert s3.get_object(Bucket="stylegan3", Key="smoke/hello.txt")["Body"].read() == b"from a ray job"
        from mlflow import MlflowClient

        run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)
        assert run.data.metrics["answer"] == 42.0
    finally:
        down = _stack("down", state, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    leftover = _leftovers(trees)
    assert not leftover, f"processes left running after the second down: {leftover}\n{down.stderr}"
