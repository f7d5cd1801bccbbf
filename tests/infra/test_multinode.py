"""Multi-node on one machine, and a spot preemption: `python -m pipeline.train --workers 2` across the nodes of a
ray.cluster_utils.Cluster, one of which is drained with a preemption notice part-way through.

The head offers no CPU (like the cluster files' head) and each of the three worker nodes fits exactly one Train
worker, so the run only succeeds if its two DDP workers sit on different nodes and all-reduce across them. Once
the first checkpoint is stored, the scenario drains a node that holds a worker the way a cloud's spot reclaim does
(`ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` with a deadline). The workers must checkpoint at the
notice, Ray Train must restart them on the two other nodes when the deadline passes, counting a preemption and
not a failure (the run allows no failure: --max-failures 0), and the resumed run must continue from the notice's
checkpoint without repeating a tick. The scenario runs in its own process group (the Cluster's nodes are its
children) and everything it started is stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests import services

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KIMG = 0.25  # long enough that the notice (about 0.1 kimg in) lands mid-run

SCENARIO = textwrap.dedent(
    """
    import glob, json, os, subprocess, sys, time
    import ray
    from ray.cluster_utils import Cluster

    data, storage, mlflow_db, kimg = sys.argv[1:5]

    def train_workers():
        actors = ray._private.state.actors().values()
        return [{"node": a["Address"]["NodeID"], "state": a["State"], "pid": a["Pid"]}
                for a in actors if "RayTrainWorker" in a["ActorClassName"]]

    # Head: no CPU, so no Train worker or data task lands there. Workers: 2 CPUs each; a Train worker takes
    # 1.5, so each node holds exactly one and keeps 0.5 for Ray Data (starvation hangs: docs/platform.md "CPU starvation").
    # Ray Train's controller polls the nodes' drain state every 5 s by default; 1 s keeps the test short. Set before
    # the nodes start: the controller is an actor and inherits its node's environment, not the driver's.
    os.environ["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"] = "1"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(3):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"RAY_ADDRESS": cluster.address}})
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}"}
        with open("train.out", "w") as out, open("train.err", "w") as err:
            train = subprocess.Popen(
                [sys.executable, "-m", "pipeline.train", "--data", data, "--cbase", "256", "--cmax", "16",
                 "--batch", "8", "--kimg", kimg, "--tick", "0.016", "--snap", "1", "--keep", "50",
                 "--aug", "noaug", "--gamma", "0.1", "--workers", "2", "--cpus-per-worker", "1.5",
                 "--max-failures", "0", "--quality", "0", "--storage", storage, "--run-name", "multinode",
                 "--tracking", "0"], env=env, stdout=out, stderr=err)
            # Preempt once training is under way: the first checkpoint is stored.
            t0, drained = time.time(), None
            while time.time() - t0 < 300 and train.poll() is None:
                if glob.glob(os.path.join(storage, "multinode", "checkpoint_*")):
                    alive = [w["node"] for w in train_workers() if w["state"] == "ALIVE"]
                    if len(alive) == 2:
                        drained = alive[0]
                        break
                time.sleep(0.5)
            first = [w for w in train_workers() if w["state"] == "ALIVE"]
            if drained is not None:
                subprocess.run(["ray", "drain-node", "--address", cluster.address, "--node-id", drained,
                                "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
                                "--deadline-remaining-seconds", "10"], check=True, capture_output=True)
            train.wait(timeout=400)
        workers = train_workers()
        print("RESULT " + json.dumps({
            "returncode": train.returncode, "stdout": open("train.out").read()[-20000:],
            "stderr": open("train.err").read()[-20000:],
            "head": cluster.head_node.node_id, "drained": drained,
            "first_group": sorted(w["node"] for w in first),
            "last_group": sorted(w["node"] for w in workers if w["pid"] not in {f["pid"] for f in first}),
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


def test_two_workers_on_two_nodes_survive_a_preemption_notice(tmp_path, tiny_shards):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))  # Cluster needs its own short RAY_TMPDIR
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(services.ray_env(ray_tmp))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    storage = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, str(script), tiny_shards, str(storage), str(tmp_path / "mlflow.db"), str(KIMG)],
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
    out = result["stdout"] + result["stderr"]
    assert result["returncode"] == 0, f"pipeline.train failed (a preemption must not count as a failure):\n{out}"
    assert len(result["cluster_nodes"]) == 4
    first, last = result["first_group"], result["last_group"]
    assert len(set(first)) == 2, f"the two Train workers shared a node: {first}"
    assert result["head"] not in first + last, "a Train worker ran on the head"
    assert result["drained"] in first, "the scenario did not drain a node that held a worker"
    # Ray Train restarted the run on the two nodes that were not drained.
    assert len(set(last)) == 2 and result["drained"] not in last, (first, last, result["drained"])
    notice = re.search(r"preemption notice: checkpoint stored at ([0-9.]+) kimg", out)
    assert notice, f"the workers did not checkpoint at the notice:\n{out[-6000:]}"
    kimg = float(notice.group(1))
    assert (storage / "multinode" / f"checkpoint_{kimg:011.3f}kimg").is_dir(), sorted(
        p.name for p in storage.glob("multinode/*"))
    # The resumed run went on from that checkpoint: every tick line the driver printed is a new step count (a
    # run resumed from an older checkpoint would print ticks it had printed before), up to the end.
    ticks = [float(k) for k in re.findall(r"tick\s+\d+\s+kimg\s+([0-9.]+)/", result["stdout"])]
    assert kimg in ticks and ticks == sorted(set(ticks)), ticks
    assert ticks[-1] >= KIMG and ticks.index(kimg) < len(ticks) - 1, ticks
    assert "done in" in result["stdout"]
    assert not leftovers, f"the scenario left processes running: {leftovers}"
