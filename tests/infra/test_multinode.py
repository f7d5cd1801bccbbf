"""Multi-node on one machine: `python -m pipeline.train --workers 2` across two nodes of ray.cluster_utils.Cluster.

The head offers no CPU (like the cluster files' head) and each worker node fits exactly one Train worker,
so the run only succeeds if its two DDP workers sit on different nodes and all-reduce across them. The
scenario runs in its own process group (the Cluster's nodes are its children) and everything it started
is stopped by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests import services

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = textwrap.dedent(
    """
    import json, os, subprocess, sys
    import ray
    from ray.cluster_utils import Cluster

    data, storage, mlflow_db = sys.argv[1:4]
    # Head: no CPU, so no Train worker or data task lands there. Workers: 2 CPUs each; a Train worker takes
    # 1.5, so each node holds exactly one and keeps 0.5 for Ray Data (starvation hangs: docs/platform.md "CPU starvation").
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}"}
        train = subprocess.run(
            [sys.executable, "-m", "pipeline.train", "--data", data, "--cbase", "256", "--cmax", "16",
             "--batch", "8", "--kimg", "0.008", "--tick", "0.008", "--snap", "1", "--aug", "noaug",
             "--gamma", "0.1", "--workers", "2", "--cpus-per-worker", "1.5", "--storage", storage,
             "--run-name", "multinode", "--tracking", "0"],
            env=env, capture_output=True, text=True, timeout=400)
        ray.init(address=cluster.address, runtime_env={"env_vars": {"RAY_ADDRESS": cluster.address}})
        workers = [a for a in ray._private.state.actors().values() if "RayTrainWorker" in a["ActorClassName"]]
        print("RESULT " + json.dumps({
            "returncode": train.returncode, "stdout": train.stdout[-4000:], "stderr": train.stderr[-6000:],
            "head": cluster.head_node.node_id,
            "worker_nodes": sorted({a["Address"]["NodeID"] for a in workers}),
            "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes()),
        }), flush=True)
        ray.shutdown()
    finally:
        cluster.shutdown()
    """
)


@pytest.fixture(scope="module")
def tiny_shards(session_dir):
    from pipeline.data import ensure_demo_shards

    return ensure_demo_shards(session_dir / "multinode-shards", 16, max_images=64, progress=False)


def test_pipeline_train_two_workers_on_two_nodes(tmp_path, tiny_shards):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))  # Cluster needs its own short RAY_TMPDIR
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(services.ray_env(ray_tmp))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    storage = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, str(script), tiny_shards, str(storage), str(tmp_path / "mlflow.db")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=540)
    finally:
        leftovers = [p for p in services.process_tree(proc.pid) if services.alive(p)]
        services.stop_tree(leftovers, grace=5)
        proc.wait(timeout=10)
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    assert line, f"the scenario produced no result ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}"
    result = json.loads(line[len("RESULT "):])
    assert result["returncode"] == 0, f"pipeline.train failed:\n{result['stdout']}\n{result['stderr']}"
    assert len(result["cluster_nodes"]) == 3
    workers = result["worker_nodes"]
    assert len(workers) == 2, f"the two Train workers shared a node: {workers}"
    assert result["head"] not in workers, "a Train worker ran on the head"
    assert "done in" in result["stdout"]
    assert list(storage.glob("multinode/checkpoint_*")), "no checkpoint was written"
    assert not leftovers, f"the scenario left processes running: {leftovers}"
