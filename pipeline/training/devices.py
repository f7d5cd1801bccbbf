"""GPUs or CPUs: one rule for pipeline.train, pipeline.tune, pipeline.generate and pipeline.metrics.

Training (`choose`, on the driver, after Ray is connected; `--use-gpu 0/1` overrides it):

1. the cluster has GPUs now (`ray.cluster_resources()["GPU"]`)                     -> GPUs;
2. the autoscaler can launch GPU nodes, read where Ray or the cluster tells us:
   a. the autoscaler's cluster config in the GCS (`ray._private.state.state.get_cluster_config()`, which autoscaler
      v2 may fill; the v1 autoscaler's status lists no launchable node types at all),
   b. the node label `stylegan3.io/autoscaler-gpus=N` on any node (the head of ray_cluster.yaml sets it),
   c. the environment variable `STYLEGAN3_AUTOSCALER_GPUS=N` of the driver (the KubeRay head sets it; on your own
      cluster pass it with `ray job submit --runtime-env-json '{"env_vars": {"STYLEGAN3_AUTOSCALER_GPUS": "8"}}'`)
                                                                                     -> GPUs;
3. otherwise                                                                          -> CPUs.

N is the most GPUs the autoscaler can bring up (`max_cluster_gpus` computes it from a cluster launcher file).
On GPUs every Ray Train worker takes one GPU and the process group uses NCCL; on CPUs, gloo. A CPU run on a
cluster that has or can launch GPUs (`--use-gpu 0`) says so in a WARNING on its choice line.

Local commands (`local_device`): the --device flag, else cuda when torch sees a CUDA device, else cpu.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

LABEL = "stylegan3.io/autoscaler-gpus"  # node label: the most GPUs the cluster's autoscaler can launch
ENV_VAR = "STYLEGAN3_AUTOSCALER_GPUS"  # the same, as an environment variable of the driver


@dataclass(frozen=True)
class DeviceChoice:
    """The decision and why: use_gpu; gpus_now = GPUs in the cluster now; launchable = the most GPUs the autoscaler
    can launch (None = not known); source = where `launchable` was read; reason = one clause for the user."""

    use_gpu: bool
    reason: str
    gpus_now: float = 0.0
    launchable: int | None = None
    source: str | None = None

    @property
    def backend(self) -> str:
        return "nccl" if self.use_gpu else "gloo"

    @property
    def wasted_gpus(self) -> bool:
        """True when this is a CPU run on a cluster that has or can launch GPUs."""
        return not self.use_gpu and (self.gpus_now >= 1 or bool(self.launchable))

    def line(self) -> str:
        """The choice line training prints first."""
        if self.use_gpu:
            return f"device: GPU (1 GPU per worker, NCCL): {self.reason}"
        text = f"device: CPU (gloo): {self.reason}"
        if self.wasted_gpus:
            have = f"has {self.gpus_now:g} GPU(s)" if self.gpus_now >= 1 else f"can launch {self.launchable} GPU(s)"
            text += "\n" + cpu_run_warning(have)
        return text


def cpu_run_warning(have: str) -> str:
    """The framed warning of a CPU run on a cluster that `have`s GPUs ("has 2 GPU(s)", "can launch 8 GPU(s))."""
    return (f"{'!' * 100}\nWARNING: this run trains on CPUs although the cluster {have}; it is ~100x slower "
            f"than on the GPUs. Stop it and run the same command with --use-gpu 1 (or without --use-gpu 0).\n"
            f"{'!' * 100}")


def max_cluster_gpus(node_types: dict[str, dict], max_workers: int | None = None) -> int:
    """The most GPUs an autoscaler can run at once: node types {name: {"resources": {...}, "max_workers": n}}
    (a cluster launcher file's available_node_types, head included with its own resources) under a global cap of
    `max_workers` worker nodes (None = no cap). Every node takes one slot of the cap, so the GPU-richest nodes first."""
    total, slots = 0, max_workers if max_workers is not None else sys.maxsize
    per_type = sorted(((float(t.get("resources", {}).get("GPU", 0)), int(t.get("max_workers", 0)))
                       for t in node_types.values()), reverse=True)
    for gpus, count in per_type:
        if gpus <= 0 or slots <= 0:
            continue
        n = min(count, slots)
        total += int(gpus) * n
        slots -= n
    return total


def _from_gcs_cluster_config() -> int | None:
    """GPUs the autoscaler's cluster config (kept in the GCS by autoscaler v2, when it reports one) allows."""
    try:
        import ray._private.state

        limits = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: absent or changed means "not known here"
        return None
    gpus = (limits or {}).get("GPU") or 0
    return int(gpus) if gpus >= 1 else None


def _from_node_labels() -> int | None:
    import ray

    for node in ray.nodes():
        value = (node.get("Labels") or {}).get(LABEL) if node.get("Alive") else None
        if value is not None:
            return _parse_count(value, f"node label {LABEL}")
    return None


def _parse_count(text: str, where: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{where}={text!r}: expected the number of GPUs the autoscaler can launch, e.g. 8") from None
    if n < 0:
        raise ValueError(f"{where}={text!r} must be >= 0")
    return n


def launchable_gpus() -> tuple[int, str] | None:
    """(the most GPUs the connected cluster's autoscaler can launch, where that was read), or None when nothing
    says so. Needs ray.init() done."""
    n = _from_gcs_cluster_config()
    if n:
        return n, "the autoscaler's cluster config"
    n = _from_node_labels()
    if n is not None:
        return n, f"node label {LABEL}"
    if os.environ.get(ENV_VAR, "").strip():
        return _parse_count(os.environ[ENV_VAR].strip(), ENV_VAR), f"${ENV_VAR}"
    return None


def choose(use_gpu: bool | None) -> DeviceChoice:
    """Decide GPUs or CPUs for a training run on the connected Ray cluster (rule in the module docstring).
    use_gpu: the --use-gpu flag (None = decide)."""
    import ray

    gpus_now = float(ray.cluster_resources().get("GPU", 0))
    found = launchable_gpus()
    launchable, source = found if found else (None, None)
    facts = dict(gpus_now=gpus_now, launchable=launchable, source=source)
    if use_gpu is not None:
        return DeviceChoice(use_gpu, f"--use-gpu {int(use_gpu)} (cluster: {_describe(gpus_now, launchable, source)})",
                            **facts)
    if gpus_now >= 1:
        return DeviceChoice(True, f"the cluster has {gpus_now:g} GPU(s)", **facts)
    if launchable:
        return DeviceChoice(True, f"the cluster has no GPU now, but its autoscaler can launch up to {launchable} "
                                  f"(from {source}); GPU nodes start when the workers ask for them", **facts)
    if not os.environ.get("RAY_ADDRESS") and launchable is None:
        # A private Ray that this process started on this machine (the embedded default, a laptop): no cluster.
        return DeviceChoice(False, "the local Ray on this machine has no GPU", **facts)
    why = "the cluster has no GPU and nothing says its autoscaler can launch any"
    if launchable == 0:
        why = f"the cluster has no GPU and {source} says its autoscaler can launch none"
    return DeviceChoice(False, f"{why} (an autoscaling cluster declares its GPUs with the node label {LABEL}=N or "
                               f"${ENV_VAR}=N, docs/cluster.md; or pass --use-gpu 1)", **facts)


def _describe(gpus_now: float, launchable: int | None, source: str | None) -> str:
    text = f"{gpus_now:g} GPU(s) now"
    if launchable is not None:
        text += f", up to {launchable} launchable ({source})"
    return text


def local_device(flag: str | None) -> tuple[str, str]:
    """(torch device, reason) for a command that runs in this process (generate, metrics): `flag` (--device) when
    given, else cuda when torch sees a CUDA device, else cpu. Raises ValueError for --device cuda without CUDA."""
    import torch

    if flag:
        if flag.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {flag}: torch sees no CUDA device here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda}); use --device cpu")
        return flag, f"--device {flag}"
    if torch.cuda.is_available():
        return "cuda", f"CUDA is available ({torch.cuda.get_device_name()})"
    return "cpu", "torch sees no CUDA device"
