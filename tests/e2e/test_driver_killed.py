"""The driver killed mid-run (a crashed laptop, a preempted head): the same command, run again, resumes from the
latest complete checkpoint and finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.training import checkpoint
from tests import services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_driver_killed_mid_run_resumes_with_the_same_command(session_dir, tmp_path):
    from pipeline.data import ensure_demo_shards

    data = ensure_demo_shards(session_dir / "kill-shards", 16, max_images=32, progress=False)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "pipeline.train", "--data", data, "--cbase", "256", "--cmax", "16",
               "--batch", "4", "--kimg", "0.04", "--tick", "0.004", "--snap", "1", "--aug", "noaug",
               "--workers", "1", "--storage", str(runs), "--run-name", "killed", "--tracking", "0", "--quality", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own private local Ray
    first = runs / "killed" / checkpoint.dir_name(4)
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # Killed once the first checkpoint is complete (its tick line is printed after Ray Train registered it)
        # and while the run goes on.
        deadline = time.monotonic() + 400
        while not any(line.startswith("tick 1 ") for line in log.read_text(errors="replace").splitlines()):
            assert proc.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no first checkpoint after 400 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert (first / checkpoint.STATE_FILE).exists()
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies at once, as in a crash
        proc.wait(timeout=30)
    finally:
        # What the driver started (its local Ray) goes with it.
        services.stop_tree(services.process_tree(proc.pid), grace=5)
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(p.name for p in (runs / "killed").glob("checkpoint_*"))
    assert checkpoint.dir_name(40) not in done_before  # killed before the end

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert "resuming from" in out, out[-4000:]
    ticks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("tick ")]
    assert ticks and ticks[0] > 1 and ticks[-1] == 10, out[-4000:]  # continued, not started over
    for name in (checkpoint.NETWORK_FILE, checkpoint.STATE_FILE):
        assert (runs / "killed" / checkpoint.dir_name(40) / name).is_file()


def test_only_checkpoints_ray_registered_are_announced(tmp_path):
    """A checkpoint directory that Ray Train never registered (the driver died while it was written) is not the
    one a resume announces: Ray will not restore it."""
    import json

    from pipeline.training.config import TrainConfig
    from pipeline.training.launch import RAY_CHECKPOINT_INDEX, latest_checkpoint

    cfg = TrainConfig().replace(run={"storage": str(tmp_path), "run_name": "r"})
    run = tmp_path / "r"
    assert latest_checkpoint(cfg) is None
    for nimg in (4, 8):
        d = run / checkpoint.dir_name(nimg)
        d.mkdir(parents=True)
        (d / checkpoint.STATE_FILE).write_bytes(b"state")
    assert latest_checkpoint(cfg) is None  # nothing registered yet
    (run / RAY_CHECKPOINT_INDEX).write_text(json.dumps(
        {"checkpoint_results": [{"checkpoint_dir_name": checkpoint.dir_name(4), "metrics": {}}]}))
    assert latest_checkpoint(cfg) == str(run / checkpoint.dir_name(4))
