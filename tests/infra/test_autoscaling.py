"""Autoscaling, simulated on one machine with Ray's fake multi-node provider.

A head that has no GPU runs a Ray Train job whose two workers each ask for a GPU; the autoscaler must
launch fake GPU worker nodes (each a real raylet on this machine), the job must run across them, and
the nodes must be removed once idle. Ray 2.60's wheel lacks the provider's example config, so the test
writes its own and starts the head with `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=…`
(the way the fake provider is meant to be started), then stops it by PID. Never `AutoscalingCluster`
or `ray stop --force`: both end every Ray process on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests import services

pytestmark = pytest.mark.slow

IDLE_TIMEOUT_S = 6

DRIVER = textwrap.dedent(
    """
    # The "training job": 2 Ray Train workers x {GPU: 1}; the head has no GPU, so both need new nodes.
    import json, os, sys, tempfile, time
    import ray
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    def emit(**kw):
        print("EVENT " + json.dumps(kw), flush=True)

    def alive_nodes():
        return [n for n in ray.nodes() if n["Alive"]]

    def loop(config):
        # One gloo all-reduce: proves the workers on different nodes form one process group.
        rank = ray.train.get_context().get_world_rank()
        x = torch.tensor([float(rank + 1)])
        dist.all_reduce(x)
        nodes = [None, None]
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
        metrics = {"sum": float(x.item()), "nodes": nodes, "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
        # Result.metrics keeps only reports that carry a checkpoint: rank 0 attaches a tiny one.
        with tempfile.TemporaryDirectory() as d:
            ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
            if ckpt:
                open(os.path.join(d, "done"), "w").close()
            ray.train.report(metrics, checkpoint=ckpt)

    # Pin every worker of this job to this cluster: Ray's helpers that look for "the" local cluster
    # (e.g. Train's placement-group cleaner) would otherwise trip over other Ray instances on the host.
    ray.init(address=os.environ["RAY_ADDRESS"], runtime_env={"env_vars": {"RAY_ADDRESS": os.environ["RAY_ADDRESS"]}})
    head = ray.get_runtime_context().get_node_id()
    emit(event="start", nodes=len(alive_nodes()), gpus=ray.cluster_resources().get("GPU", 0))
    t0 = time.monotonic()
    trainer = TorchTrainer(
        loop,
        torch_config=TorchConfig(backend="gloo"),
        # use_gpu: the workers request GPUs (fake ones; no CUDA is touched on this CPU machine).
        scaling_config=ScalingConfig(num_workers=2, use_gpu=True, resources_per_worker={"CPU": 0.5, "GPU": 1}),
        run_config=ray.train.RunConfig(name="autoscale", storage_path=sys.argv[1]),
    )
    result = trainer.fit()
    peak = len(alive_nodes())
    emit(event="trained", seconds=time.monotonic() - t0, sum=result.metrics["sum"], peak_nodes=peak,
         gpus=ray.cluster_resources().get("GPU", 0), head=head, worker_nodes=result.metrics["nodes"],
         gpu_ids=result.metrics["gpu_ids"])

    t1 = time.monotonic()
    while len(alive_nodes()) > 1 and time.monotonic() - t1 < 90:
        time.sleep(1)
    emit(event="idle", seconds=time.monotonic() - t1, nodes=len(alive_nodes()),
         gpus=ray.cluster_resources().get("GPU", 0))
    """
)


FAKE_GPU_TYPES = {"fake-gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
                                 "max_workers": 2}}


def fake_cluster_config(gcs_port: int, head_resources: dict, worker_types: dict, max_workers: int = 2,
                        idle_timeout_s: float = IDLE_TIMEOUT_S) -> dict:
    """A cluster launcher file for the fake provider: a head with `head_resources` and `worker_types` (name ->
    {"resources", "node_config", "min_workers", "max_workers"}), at most `max_workers` worker nodes."""
    return {
        "cluster_name": "fake-autoscale",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "fake_multinode",
            # Workers join this GCS (the provider's default is <node ip>:6379, which we do not use).
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "launch_multiple": True,
            # Fake nodes are local raylets: nothing to SSH into or set up, and they report their node id
            # where a cloud node reports its IP (the autoscaler matches nodes by that).
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "use_node_id_as_ip": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        # The fake provider tags its head as "ray.head.default": the type must carry that name.
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": dict(head_resources), "node_config": {}, "max_workers": 0},
            **worker_types,
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_fake_autoscaling_head(workdir: Path, head_resources: dict | None = None, worker_types: dict | None = None,
                                max_workers: int = 2, extra_flags: list[str] | None = None,
                                extra_env: dict[str, str] | None = None) -> services.Server:
    """`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=…` with a dashboard (job submission, state API),
    every port from a services.PortBlock (retried on a fresh block when it does not come up). head_resources:
    {"CPU": n, "GPU": n} (default 1 CPU, no GPU); extra_flags / extra_env: what the head's start command adds
    (e.g. --labels, --resources and environment assignments). `.info`: address, dashboard_url, temp_dir, env."""
    head_resources = {"CPU": 1, "GPU": 0, **(head_resources or {})}
    return services.start_with_retry(lambda block: _start_fake_head(
        workdir, block, head_resources, worker_types or FAKE_GPU_TYPES, max_workers, extra_flags or [],
        extra_env or {}))


def _start_fake_head(workdir: Path, block: services.PortBlock, head_resources: dict, worker_types: dict,
                     max_workers: int, extra_flags: list[str], extra_env: dict[str, str]) -> services.Server:
    workdir.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="ras-", dir="/tmp"))  # short: unix socket paths <= 107 bytes
    config = workdir / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config(block[0], head_resources, worker_types, max_workers)))
    env = {**os.environ, **services.ray_env(temp_dir), **extra_env, "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        services.venv_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--autoscaling-config={config}", f"--num-cpus={head_resources['CPU']:g}",
        f"--num-gpus={head_resources['GPU']:g}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
        *services.ray_port_flags(block), *extra_flags, f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    server = services._spawn("ray-fake-autoscaler", cmd, workdir, env)
    dashboard = f"http://127.0.0.1:{block[1]}"
    server.info.update(address=f"127.0.0.1:{block[0]}", dashboard_url=dashboard, temp_dir=temp_dir, env=env)

    def ready():
        with urllib.request.urlopen(f"{dashboard}/api/version", timeout=2) as r:
            return r.status == 200

    try:
        services.wait_until(ready, 120, "fake autoscaling ray head", server.log, server.proc)
    except Exception:
        stop_fake_autoscaling_head(server)
        raise
    return server


def stop_fake_autoscaling_head(server: services.Server) -> list[int]:
    """Stop the head and every fake node by PID; return all PIDs stopped.

    The autoscaler (in the head's session) may start a node while we stop it, so repeat until the
    session is empty. Every process we start lives in the session the head leads.
    """
    stopped: list[int] = []
    for _ in range(5):
        tree = [p for p in services.process_tree(server.proc.pid) if services.alive(p)]
        if not tree:
            break
        stopped += tree
        services.stop_tree(tree, grace=8)
    server.proc.wait(timeout=10)
    server.release_ports()
    shutil.rmtree(server.info["temp_dir"], ignore_errors=True)
    return stopped


def test_fake_gpu_nodes_scale_up_for_training_and_down_when_idle(tmp_path):
    head = start_fake_autoscaling_head(tmp_path / "head")
    try:
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        env = {**head.info["env"], "RAY_ADDRESS": head.info["address"]}
        env.pop("RAY_FAKE_CLUSTER")
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], env=env, capture_output=True,
                              text=True, timeout=300)
        events = {e["event"]: e for e in (json.loads(line[6:]) for line in proc.stdout.splitlines()
                                          if line.startswith("EVENT "))}
        assert proc.returncode == 0 and "idle" in events, (
            f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
        )
    finally:
        tree = stop_fake_autoscaling_head(head)

    print("autoscaling events:", json.dumps(events))
    start, trained, idle = events["start"], events["trained"], events["idle"]
    assert start["nodes"] == 1 and start["gpus"] == 0, "the head alone, with no GPU"
    assert trained["sum"] == 3.0, "ranks 0+1 all-reduced to 1+2"
    assert trained["peak_nodes"] == 3 and trained["gpus"] == 2, "two fake GPU nodes were launched"
    workers = trained["worker_nodes"]
    assert len(set(workers)) == 2 and trained["head"] not in workers, "one worker per new GPU node"
    assert trained["gpu_ids"] == ["0"], "each worker was granted its node's GPU"
    assert idle["nodes"] == 1 and idle["gpus"] == 0, "the idle GPU nodes were removed"
    assert idle["seconds"] >= IDLE_TIMEOUT_S - 1, "not removed before the idle timeout"
    assert not [p for p in tree if services.alive(p)], "processes left after stopping the head by PID"


def _monitor_tail(head: services.Server) -> str:
    logs = sorted(Path(head.info["temp_dir"]).glob("session_*/logs/monitor.*"))
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
