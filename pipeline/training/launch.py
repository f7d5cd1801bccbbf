"""Launching a run from the driver: check a run description, build the Ray `TorchTrainer` and fit it.

    cfg, info = prepare(TrainConfig(...))        # validation + derived values; no cluster work
    result = fit(cfg, info)                      # needs ray.init() done (local or a cluster)

Automatic resume (docs/platform.md "Ray Train V2"): the trainer is rebuilt with the same
`ray.train.RunConfig(name=run_name, storage_path=storage)`; Ray hands the latest checkpoint of that run to
the workers (`ray.train.get_checkpoint()`), which restore the full state. `FailureConfig(max_failures)`
restarts dead workers from the latest checkpoint the same way.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import ops
from pipeline import storage
from pipeline.data import (DataError, corrupt_counter, dataset_info, default_passes, label_distribution,
                           make_dataset)
from pipeline.mlflow_store import tracking_uri
from pipeline.model_sources import SourceError, fetch_network
from pipeline.training import devices
from pipeline.training.checkpoint import STATE_FILE
from pipeline.training.config import LEGACY_KEYS, ConfigError, TrainConfig
from pipeline.training.loop import train_loop_per_worker
from pipeline.training.progress import QUALITY_KEY


def prepare(cfg: TrainConfig):
    """Validate `cfg` against itself and the data's manifest; return (resolved cfg with a run name, DatasetInfo).

    Raises ConfigError (one sentence: what is wrong and what to do) before any cluster work.
    """
    cfg.validate()
    if not cfg.data.uri:
        raise ConfigError("no data: pass --data URI (a shard set built by `python -m pipeline.dataset build`)")
    try:
        info = dataset_info(cfg.data.uri)
    except (DataError, storage.StorageError) as e:
        raise ConfigError(f"--data {cfg.data.uri}: {e}") from None
    if cfg.data.cond and info.c_dim == 0:
        raise ConfigError(f"--cond needs labels but {cfg.data.uri} has none; rebuild the shards with labels")
    resolved = cfg.resolved(info.resolution, info.channels, info.c_dim)
    if resolved.tracking.enabled and resolved.tracking.uri is None:
        # Resolved here, on the driver: the workers run in other directories (./mlflow.db would be theirs).
        resolved = resolved.replace(tracking={"uri": tracking_uri()})
    if resolved.run.run_name is None:
        resolved = resolved.replace(run={"run_name": default_run_name(resolved, info)})
    if resolved.run.resume:
        _check_resume_source(resolved.run.resume)
    return resolved, info


# The config sections whose values shape the training trajectory (and so enter a derived run name).
TRAJECTORY_SECTIONS = ("model", "optim", "loss", "aug", "schedule", "data")


def default_run_name(cfg: TrainConfig, info) -> str:
    """A stable name for a run description, so that re-running the same command resumes it:
    {cfg}-{res}px-{data name}-b{batch}-{8 hex of the config hash}."""
    # Only what changes the training trajectory: a longer --kimg or other --tick/--snap/--keep/--workers
    # continue the same run.
    flat = {k: v for k, v in cfg.flatten().items()
            if k.split(".", 1)[0] in TRAJECTORY_SECTIONS or k in ("run.seed", "run.resume")}
    flat = {k: v for k, v in flat.items() if k not in ("schedule.kimg", "schedule.tick", "schedule.snap", "schedule.keep")}
    # Keys renamed since (config.LEGACY_KEYS) enter the digest under their first names: renaming a key leaves the
    # names, and so the automatic resume, of existing runs as they were.
    first_names = {f"{new[0]}.{new[1]}": f"{old[0]}.{old[1]}" for old, new in LEGACY_KEYS.items()}
    flat = {first_names.get(k, k): v for k, v in flat.items()}
    # Options added later, at their defaults, leave the names (and so the automatic resume) of older runs as they were.
    for key, default in (("model.fp32", False), ("model.freezed", 0)):
        if flat.get(key) == default:
            flat.pop(key)
    flat["data.sha256"] = info.manifest_sha256
    digest = hashlib.sha256(repr(sorted(flat.items())).encode()).hexdigest()[:8]
    data_name = Path(storage.parse(cfg.data.uri).uri().rstrip("/")).name or "data"
    return f"{cfg.model.preset}-{cfg.model.resolution}px-{data_name}-b{cfg.schedule.batch}-{digest}"


def _check_resume_source(src: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sg3-resume-check-") as tmp:
        try:
            fetch_network(src, tmp)
        except (SourceError, storage.StorageError) as e:
            raise ConfigError(f"--resume: {e}") from None


def run_dir(cfg: TrainConfig) -> str:
    """URI of the run's directory: {storage}/{run_name} (checkpoints are checkpoint_*kimg/ inside)."""
    return storage.join(cfg.run.storage, cfg.run.run_name)


# Where Ray Train (2.60) records the checkpoints it has registered for a run, in the run directory. A checkpoint
# directory that is not listed there (a driver killed while it was written) is never restored.
RAY_CHECKPOINT_INDEX = "checkpoint_manager_snapshot.json"


def latest_checkpoint(cfg: TrainConfig) -> str | None:
    """URI of the newest complete checkpoint of this run -- the one Ray Train hands the workers on a resume --, or
    None (used to announce a resume and to name the last checkpoint)."""
    import json

    index = storage.join(run_dir(cfg), RAY_CHECKPOINT_INDEX)
    if not storage.exists(index):
        return None
    try:
        registered = {r["checkpoint_dir_name"] for r in json.loads(storage.read_bytes(index))["checkpoint_results"]}
    except (ValueError, KeyError, TypeError):
        registered = None  # another Ray's layout: fall back to every checkpoint directory with a state file
    uris = storage.list_uris(run_dir(cfg), suffix=STATE_FILE)
    dirs = sorted(u[: -len(STATE_FILE) - 1] for u in uris if "/checkpoint_" in u)
    dirs = [d for d in dirs if registered is None or d.rstrip("/").rsplit("/", 1)[-1] in registered]
    return dirs[-1] if dirs else None


def _mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def choose_device(cfg: TrainConfig) -> TrainConfig:
    """Decide GPUs or CPUs once, on the driver (pipeline.training.devices: --use-gpu, else GPUs when the cluster has
    them or its autoscaler can launch them), print the choice line and return `cfg` with run.use_gpu set, so that
    the workers, the MLflow params and every trial of a sweep see the same decision. Needs ray.init() done."""
    try:
        choice = devices.choose(cfg.run.use_gpu)
    except ValueError as e:  # a malformed declaration of launchable GPUs
        raise ConfigError(str(e)) from None
    print(choice.line(), flush=True)
    return cfg.replace(run={"use_gpu": choice.use_gpu})


def build_trainer(cfg: TrainConfig, info, progress=True, callbacks: list | None = None,
                  step_hooks: list | None = None, train_callbacks: list | None = None):
    """The TorchTrainer of a prepared config (everything the workers need is in `cfg`, tracking included).
    progress: True = tick lines printed by the Ray Train controller, a `ray.util.queue.Queue` = tick lines sent
    there (`fit` prints them in the driver), False = none; callbacks: extra Ray Train callbacks (a sweep's trial
    adds TuneReportCallback); step_hooks: picklable callables `hook(trainer)` that every worker calls after each
    training step, with the worker's `pipeline.training.trainer.Trainer` (tests install them, e.g. to make a worker
    fail at a chosen image count); train_callbacks: picklable factories `factory(cfg) -> TrainCallbacks` of extra
    rank-0 callbacks beside the tracking hook (tests record the worker's state with one). Hooks and factories
    travel to the workers inside the loop config."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer


    # Decided by choose_device on the driver; a caller that did not (tests, a library user) gets the same rule here.
    use_gpu = cfg.run.use_gpu if cfg.run.use_gpu is not None else devices.choose(None).use_gpu
    # One Ray Data execution per pass would spend seconds starting each pass of a small set: each execution
    # covers several passes (shard orders of passes 0..passes-1; the workers read it again and again).
    passes = default_passes(len(info.shards))
    counter = corrupt_counter(cfg.run.max_corrupt, info.num_images)  # the workers set the run's budget on it
    ds = make_dataset(cfg.data.uri, resolution=info.resolution, channels=info.channels,
                      use_labels=cfg.data.cond, mirror=cfg.data.mirror, seed=cfg.run.seed, passes=passes,
                      counter=counter)
    loop_config = {
        "config": cfg.to_dict(),
        "pass_images": info.num_images * (2 if cfg.data.mirror else 1),  # images in one pass over the data
        "passes_per_execution": passes,  # passes in one read of the dataset shard
        "corrupt_counter": counter,  # actor counting corrupt samples the decoders skipped
        "manifest_sha256": info.manifest_sha256,  # identifies the exact data set (tracking tag)
        "step_hooks": list(step_hooks or []),
        "train_callbacks": list(train_callbacks or []),
    }
    loop_config["dataset_info"] = info  # the quality probe reads its fixed subset of reals from the shards
    # Where progress.png goes (beside the checkpoints): absolute, the workers run in other directories.
    loop_config["run_dir"] = (run_dir(cfg) if storage.is_s3(cfg.run.storage)
                              else str(Path(storage.parse(cfg.run.storage).path).resolve() / cfg.run.run_name))
    labels = label_distribution(info) if cfg.data.cond else None
    if labels is not None:  # the whole set's labels and their counts: fake labels are drawn from them
        loop_config["labels"] = (labels[0].tolist(), labels[1].tolist())
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.run.workers, use_gpu=use_gpu,
        # GPUs: one per worker (Ray Train makes it the worker's CUDA device); the autoscaler launches GPU nodes for
        # them. CPU-only: fractional CPUs leave room for Ray Data's decode tasks (docs/platform.md "CPU starvation").
        resources_per_worker={"GPU": 1} if use_gpu else {"CPU": cfg.run.cpus_per_worker})
    if storage.is_s3(cfg.run.storage):
        fs, path = storage.pyarrow_fs(cfg.run.storage)  # pyarrow ignores AWS_ENDPOINT_URL by itself
    else:
        fs, path = None, str(Path(storage.parse(cfg.run.storage).path).resolve())
    run_config = ray.train.RunConfig(
        name=cfg.run.run_name, storage_path=path, storage_filesystem=fs,
        # Worker deaths retry --max-failures times. A spot preemption announced by a node drain is counted apart
        # and retried without limit: the loop checkpoints at the notice, so a resume loses no step
        # (pipeline.training.loop, docs/cluster.md "Spot instances").
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures, max_preemption_failures=-1),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.schedule.keep),
        # `is` tests: an empty queue is falsy (it has a length).
        callbacks=([] if progress is False else
                   [ProgressPrinter(cfg.schedule.kimg, None if progress is True else progress, use_gpu=use_gpu)])
        + list(callbacks or []),
        # Workers get the driver's credentials for the object store and MLflow (MLFLOW_TRACKING_TOKEN, ...: kept out
        # of the config, which MLflow logs as params); the tracking URI itself travels in cfg.tracking.
        # cpu_process_env: allocator settings for the CPU path's large tensors (ops/__init__.py), in place before
        # the worker process starts.
        worker_runtime_env={"env_vars": {**ops.cpu_process_env(), **storage.aws_env(), **_mlflow_env()}},
    )
    return TorchTrainer(train_loop_per_worker, train_loop_config=loop_config, scaling_config=scaling,
                        datasets={"train": ds}, run_config=run_config,
                        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"))


def fit(cfg: TrainConfig, info, progress: bool = True, **kwargs):
    """Build (kwargs as build_trainer) and fit the trainer; returns the ray.train.Result
    (result.checkpoint = the latest checkpoint).

    progress: print one line per tick on this process's stdout. The lines travel from the Ray Train controller
    through a queue actor, so that they reach the user even when Ray's own worker output does not (the commands
    start Ray with log_to_driver=False: Ray's logs stay in Ray's log files)."""
    if not progress:
        return build_trainer(cfg, info, progress=False, **kwargs).fit()
    import threading

    from ray.util.queue import Empty, Queue

    lines = Queue(actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, info, progress=lines, **kwargs)
    outcome: dict[str, Any] = {}

    def run():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name="ray-train-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not lines.empty():
            try:
                print(lines.get(timeout=0.5), flush=True)
            except Empty:
                pass
    finally:
        thread.join()
        lines.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _num(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.4f}"  # NaN: the phase did not run this tick


def progress_line(m: dict[str, Any]) -> str:
    """One progress line of a tick's metrics: kimg, ETA, losses, ADA p, the quality metric at snapshots, speed."""
    left = max(m["total_kimg"] - m["kimg"], 0) * m["sec_per_kimg"]
    quality = f"  SWD {m[QUALITY_KEY]:.1f}" if QUALITY_KEY in m else ""  # snapshots only (--quality)
    return (f"tick {m['tick']:<4d} kimg {m['kimg']:8.3f}/{m['total_kimg']:g}  ETA {_fmt_time(left):>7}  "
            f"G {m['loss/G_loss']:.3f}  D {m['loss/D_loss']:.3f}  R1 {_num(m['loss/r1_penalty'])}  "
            f"p {m['ada_p']:.3f}{quality}  {m['sec_per_kimg']:.1f} s/kimg  {m['img_per_s']:.1f} img/s  "
            f"mem {m['peak_mem_gb']:.2f} GB")


from ray.train import UserCallback  # noqa: E402 - Ray Train V2's public callback base (Ray >= 2.56)


class ProgressPrinter(UserCallback):
    """One line per tick, printed (runs in the Ray Train controller) or put into `sink`, a ray.util.queue.Queue
    that the driver reads (`fit`)."""

    def __init__(self, total_kimg: float, sink=None, use_gpu: bool = True):
        self.total_kimg = total_kimg
        self.start = time.time()
        self.sink = sink
        self.use_gpu = use_gpu
        self.checked_gpus = use_gpu  # a CPU run looks once, at its first tick, for GPUs that joined the cluster

    def _emit(self, line: str) -> None:
        if self.sink is not None:
            self.sink.put(line)
        else:
            print(line, flush=True)

    def after_report(self, run_context, metrics, checkpoint):
        if not metrics or "kimg" not in metrics[0]:
            return
        line = progress_line(metrics[0])
        if checkpoint is not None:
            line += f"  [checkpoint {checkpoint.path}]"
        self._emit(line)
        if metrics[0].get("preempted"):
            self._emit(f"preemption notice: checkpoint stored at {metrics[0]['kimg']:.3f} kimg; the run resumes from "
                       "it on other nodes once this one goes")
        if not self.checked_gpus:
            # A CPU run on a cluster that declared no GPUs may still have made its autoscaler launch GPU nodes (the
            # only nodes with CPUs): say so, once, where the user reads the ticks.
            self.checked_gpus = True
            import ray

            gpus = ray.cluster_resources().get("GPU", 0)
            if gpus >= 1:
                self._emit(devices.cpu_run_warning(f"has {gpus:g} GPU(s) now"))
