"""`ray job submit --working-dir . -- python -m pipeline.train ...` against a running head (`ray start --head`),
through JobSubmissionClient: the driver exits 0 and the checkpoint lands in --storage."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from pipeline.training import checkpoint
from tests import services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Never upload the virtualenv, run outputs, databases or git objects with the working directory.
EXCLUDES = [".venv", ".git", "outputs", "mlruns", "*.db", ".cache", "__pycache__", ".pytest_cache", "*.egg-info"]


class HeadDied(Exception):
    """The Ray head exited under the job (on an overloaded machine its raylet can abort when GCS or the dashboard
    agent answers too late): an accident of the machine, not of the code under test."""


def test_job_submit_trains_and_writes_checkpoint(ray_head, session_dir, tmp_path):
    from pipeline.data import ensure_demo_shards

    data = ensure_demo_shards(session_dir / "job-shards", 16, max_images=32, progress=False)
    runs = tmp_path / "runs"
    entrypoint = " ".join([
        sys.executable, "-m", "pipeline.train", "--data", data, "--cbase", "256", "--cmax", "16",
        "--batch", "4", "--kimg", "0.004", "--tick", "0.004", "--snap", "1", "--workers", "1",
        "--storage", str(runs), "--run-name", "job", "--tracking", "0",
    ])
    try:
        logs = _submit_and_wait(ray_head, entrypoint)
    except HeadDied as died:
        # Once more on a fresh head (fresh ports); a second death fails the test with both heads' diagnostics.
        print(f"the Ray head died under the job; retrying once on a new head:\n{died}")
        head = services.start_ray_head(session_dir / "ray-head-retry")
        try:
            logs = _submit_and_wait(head, entrypoint)
        except HeadDied as again:
            raise AssertionError(f"the Ray head died twice:\n{died}\n--- second head:\n{again}") from None
        finally:
            services.stop_ray_head(head)
    ckpt = runs / "job" / checkpoint.dir_name(4)
    for name in (checkpoint.NETWORK_FILE, checkpoint.STATE_FILE, checkpoint.GRID_FILE):
        assert (ckpt / name).is_file(), f"{name} missing; driver log:\n{logs[-3000:]}"
    assert "latest checkpoint:" in logs and "done in" in logs


def _submit_and_wait(head, entrypoint: str) -> str:
    """Submit `entrypoint` as a job to `head`, wait until it ends; assert it succeeded; return its logs.
    Raises HeadDied when the head's process exits meanwhile."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head.info["dashboard_url"])
    job = f"train-{uuid.uuid4().hex[:8]}"
    deadline = time.time() + 180
    while True:  # the head's job agent may come up after its dashboard; a loaded head may drop a request
        try:
            client.submit_job(entrypoint=entrypoint, submission_id=job,
                              runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES})
            break
        except (RuntimeError, requests.ConnectionError) as e:
            if head.proc.poll() is not None:
                raise HeadDied(_head_diagnostics(head)) from e
            if "already exists" in str(e):  # the dropped request had gone through
                break
            if time.time() > deadline or not ("No available agent" in str(e)
                                              or isinstance(e, requests.ConnectionError)):
                raise AssertionError(f"job submission failed: {e}\n{_head_diagnostics(head)}") from e
            time.sleep(3)
    deadline = time.time() + 540
    while time.time() < deadline:
        try:
            status = client.get_job_status(job)
        except (RuntimeError, requests.ConnectionError):
            if head.proc.poll() is not None:
                raise HeadDied(_head_diagnostics(head)) from None
            raise
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    logs = client.get_job_logs(job)
    info = client.get_job_info(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert info.driver_exit_code == 0
    return logs


def _head_diagnostics(head) -> str:
    """Whether the head still runs and the end of its dashboard log (why a submission was refused)."""
    logs = Path(head.info["temp_dir"]) / "session_latest" / "logs"
    tail = ""
    for name in ("dashboard.log", "dashboard_agent.log"):
        if (logs / name).exists():
            tail += f"--- {name}\n" + "\n".join((logs / name).read_text(errors="replace").splitlines()[-15:]) + "\n"
    return f"head process exit code: {head.proc.poll()}\n{tail}"
