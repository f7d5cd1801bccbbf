"""The device rule (pipeline.training.devices) on made-up clusters: what Ray reports is replaced, nothing starts."""

from __future__ import annotations

import pytest
import ray

from pipeline.training import devices


@pytest.fixture
def cluster(monkeypatch):
    """A fake connected cluster: set .gpus (GPUs now), .labels (head node labels), .gcs (cluster-config GPUs)."""

    class Cluster:
        gpus = 0.0
        labels: dict[str, str] = {}
        gcs = None

    c = Cluster()
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": c.gpus} if c.gpus else {"CPU": 4.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Labels": dict(c.labels)}])
    monkeypatch.setattr(devices, "_from_gcs_cluster_config", lambda: c.gcs)
    monkeypatch.delenv(devices.ENV_VAR, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a driver on a cluster (as `ray job submit` starts it)
    return c


def test_gpus_present(cluster):
    cluster.gpus = 2
    choice = devices.choose(None)
    assert choice.use_gpu and choice.backend == "nccl"
    assert choice.line() == "device: GPU (1 GPU per worker, NCCL): the cluster has 2 GPU(s)"


def test_no_gpus_nothing_declared_is_cpu_and_says_how_to_declare(cluster):
    choice = devices.choose(None)
    assert not choice.use_gpu and choice.backend == "gloo"
    assert devices.LABEL in choice.line() and devices.ENV_VAR in choice.line() and "WARNING" not in choice.line()


def test_private_local_ray_without_gpu_says_so_briefly(cluster, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS")  # the embedded default: a Ray this process started on this machine
    choice = devices.choose(None)
    assert choice.line() == "device: CPU (gloo): the local Ray on this machine has no GPU"


@pytest.mark.parametrize("where", ["label", "env", "gcs"])
def test_launchable_gpus_choose_gpu(cluster, monkeypatch, where):
    if where == "label":
        cluster.labels = {devices.LABEL: "36"}
    elif where == "env":
        monkeypatch.setenv(devices.ENV_VAR, "24")
    else:
        cluster.gcs = 16
    choice = devices.choose(None)
    assert choice.use_gpu
    assert "no GPU now, but its autoscaler can launch up to" in choice.reason
    assert {"label": devices.LABEL, "env": devices.ENV_VAR, "gcs": "cluster config"}[where] in choice.reason


def test_declared_zero_is_cpu(cluster):
    cluster.labels = {devices.LABEL: "0"}
    choice = devices.choose(None)
    assert not choice.use_gpu and "can launch none" in choice.reason


def test_flag_overrides_and_cpu_on_gpu_cluster_is_loud(cluster):
    cluster.labels = {devices.LABEL: "8"}
    choice = devices.choose(False)
    assert not choice.use_gpu and choice.wasted_gpus
    assert "--use-gpu 0" in choice.line() and "WARNING: this run trains on CPUs although the cluster can launch 8" \
        in choice.line()
    cluster.gpus = 0
    cluster.labels = {}
    assert devices.choose(True).use_gpu


def test_malformed_declaration(cluster, monkeypatch):
    monkeypatch.setenv(devices.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="number of GPUs"):
        devices.choose(None)


def test_max_cluster_gpus():
    types = {"head": {"resources": {"CPU": 0}}, "a": {"resources": {"GPU": 1}, "max_workers": 8},
             "b": {"resources": {"GPU": 8}, "max_workers": 2}}
    assert devices.max_cluster_gpus(types) == 24
    assert devices.max_cluster_gpus(types, max_workers=3) == 17  # the 8-GPU nodes first
    assert devices.max_cluster_gpus({"cpu": {"resources": {"CPU": 8}, "max_workers": 4}}) == 0


def test_local_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.local_device(None) == ("cpu", "torch sees no CUDA device")
    assert devices.local_device("cpu") == ("cpu", "--device cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.local_device("cuda")


def test_cpu_run_warns_once_when_gpu_nodes_joined(cluster):
    """The progress printer of a CPU run looks for GPUs at its first tick (the autoscaler may have launched GPU
    nodes for the run's CPU workers on a cluster that declared nothing)."""
    from pipeline.training.launch import ProgressPrinter

    class Sink(list):
        put = list.append

    m = {"tick": 1, "kimg": 0.1, "total_kimg": 1.0, "sec_per_kimg": 10.0, "loss/G_loss": 1.0, "loss/D_loss": 1.0,
         "loss/r1_penalty": 0.1, "ada_p": 0.0, "img_per_s": 10.0, "peak_mem_gb": 1.0}
    cluster.gpus = 2
    sink = Sink()
    printer = ProgressPrinter(1.0, sink, use_gpu=False)
    printer.after_report(None, [m], None)
    printer.after_report(None, [m], None)
    assert [line.startswith("tick") for line in sink] == [True, False, True]
    assert "WARNING: this run trains on CPUs although the cluster has 2 GPU(s) now" in sink[1]
    quiet = Sink()
    ProgressPrinter(1.0, quiet, use_gpu=True).after_report(None, [m], None)
    assert len(quiet) == 1


def test_tune_trials_ask_for_gpus_the_autoscaler_can_launch(cluster, capsys):
    """pipeline.tune decides once, by the same rule, and fixes it in the sweep's base config (every trial's
    workers then ask for {GPU: 1}); the launchable GPUs count towards the trials that run at once."""
    from types import SimpleNamespace

    from pipeline.training.config import TrainConfig
    from pipeline.tuning.sweep import check_cluster

    cluster.labels = {devices.LABEL: "8"}
    sweep = SimpleNamespace(base=TrainConfig().replace(run={"workers": 2}), max_concurrent=0)
    assert check_cluster(sweep) == 4
    assert sweep.base.run.use_gpu is True
    assert capsys.readouterr().out.startswith("device: GPU (1 GPU per worker, NCCL)")
    cluster.labels = {}
    sweep = SimpleNamespace(base=TrainConfig().replace(run={"workers": 1}), max_concurrent=0)
    check_cluster(sweep)
    assert sweep.base.run.use_gpu is False
