"""Train StyleGAN3 on Ray: `python -m pipeline.train [flags]` (spec §e; flags spelled like the official train.py).

Laptop / this 2-core machine (no flags = the embedded default: demo:emoji shards at 32x32 are built into
~/.cache/stylegan3-ray, a local Ray starts, a tiny StyleGAN3-T trains on the CPU for a few minutes, fakes
grids and checkpoints land in outputs/runs/, metrics in MLflow at ./mlflow.db):

    python -m pipeline.train

One node with 8 GPUs (an FFHQ-like set at 256x256, the official recommended settings):

    python -m pipeline.dataset build ~/ffhq256.zip s3://bucket/ffhq256
    python -m pipeline.train --cfg stylegan3-t --data s3://bucket/ffhq256 --batch 32 --gamma 2 \\
        --workers 8 --mirror 1 --storage s3://bucket/runs --run-name ffhq256-t

Many nodes (a Ray cluster: `ray up ray_cluster.yaml`, or KubeRay from infra/): submit the same command as a job;
running it again with the same --run-name and --storage continues from the latest checkpoint:

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m pipeline.train --cfg stylegan3-r --data s3://bucket/afhq512 --batch 32 --gamma 16.4 \\
        --workers 16 --storage s3://bucket/runs --run-name afhq512-r

Fine-tune from weights (a NEW run; ADA kimg 100, no EMA ramp-up, no blur, spec §e.1):

    python -m pipeline.train --data s3://bucket/metfaces1024 --gamma 6.6 --kimg 5000 --snap 10 \\
        --resume models:/stylegan3-ffhq-t@champion --workers 8
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from pipeline.training.config import (AUG_MODES, PRESETS, AugConfig, ConfigError, DataConfig, LossConfig,
                                      ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig)

DEMO_CACHE = Path(os.environ.get("STYLEGAN3_CACHE", "~/.cache/stylegan3-ray")).expanduser()
DEMO_RESOLUTION = 32
DEMO_IMAGES = 1000  # a quarter of the demo set: the shards build in seconds
# The embedded default: a tiny StyleGAN3-T at 32x32 that trains on a 2-core CPU in under 10 minutes
# (measured in docs/training.md). Same meaning as the flags of the same names.
DEMO_ARGS = ["--cfg", "stylegan3-t", "--batch", "8", "--cbase", "1024", "--cmax", "32", "--kimg", "0.2",
             "--tick", "0.04", "--snap", "1", "--keep", "2", "--workers", "1", "--cpus-per-worker", "1"]
DEMO_RUN_NAME = "demo-emoji32-t"
DEMO_DATA = "demo:emoji"  # --data value that means the bundled set (also the default when --data is not given)
# Flags that leave the demo's training trajectory as it is (the derived run name ignores them too): with only
# these on top of the embedded default, the run keeps the name DEMO_RUN_NAME, so `--kimg 2` continues it.
SAME_RUN_FLAGS = {"--kimg", "--tick", "--snap", "--keep", "--workers", "--cpus-per-worker", "--use-gpu",
                  "--storage", "--max-failures", "--metrics", "--quality", "--experiment", "--model-name", "--tracking",
                  "--data"}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {text!r}")


def make_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train StyleGAN3 (T or R) on a Ray cluster; with no arguments, a small demo run on this "
                    "machine. Same --run-name + --storage = continue the run from its latest checkpoint.",
        epilog=__doc__.split("\n", 2)[2])
    g = p.add_argument_group("model")
    g.add_argument("--cfg", default=d.model.cfg, choices=list(PRESETS),
                   help="architecture: stylegan3-t (translation equivariant) or stylegan3-r (also rotation)")
    g.add_argument("--cbase", type=int, default=d.model.cbase, help="channel base (capacity), default %(default)s")
    g.add_argument("--cmax", type=int, default=d.model.cmax, help="max channels per layer, default %(default)s")
    g.add_argument("--map-depth", type=int, default=d.model.map_depth, help="mapping-network layers (%(default)s)")
    g.add_argument("--mbstd-group", type=int, default=d.model.mbstd_group,
                   help="minibatch-std group size of D; each worker's chunk must be a multiple (%(default)s)")
    g.add_argument("--fp32", type=_bool, default=d.model.fp32,
                   help="1 = no fp16 layers on GPUs (num_fp16_res 0, conv_clamp None for G and D), as the official "
                        "--fp32; CPUs always compute in fp32 (default 0)")
    g.add_argument("--freezed", type=int, default=d.model.freezed,
                   help="freeze the first N conv layers of D, counted from the highest resolution (fromrgb, conv0, "
                        "conv1, skip per block), as the official --freezed; for fine-tuning (%(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="shard set built by `python -m pipeline.dataset build` (dir or s3://bucket/prefix); "
                   f"{DEMO_DATA} or no --data = the bundled demo set at {DEMO_RESOLUTION}x{DEMO_RESOLUTION} with the "
                   "embedded default's settings under the flags you give")
    g.add_argument("--mirror", type=_bool, default=False, help="add x-flipped copies of the images (0/1)")
    g.add_argument("--cond", type=_bool, default=False, help="class-conditional training from the labels (0/1)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch", type=int, default=d.schedule.batch, help="global batch size over all workers")
    g.add_argument("--batch-per-worker", type=int, help="images per forward pass on a worker (gradient "
                   "accumulation when smaller than batch/workers; like the official --batch-gpu)")
    g.add_argument("--gamma", type=float, help="R1 regularisation weight. The official tool requires it; the paper "
                   "used 2 at 256x256, 6.6-8.2 for faces at 512x512-1024x1024 (MetFaces, AFHQv2 T), 16.4 for AFHQv2 R "
                   "(and 32.8 for FFHQ 1024). Default here: the rule of thumb 2*(res/256)^2 (2 at 256, 8 at 512, "
                   "32 at 1024), printed on the run's first line")
    g.add_argument("--glr", type=float, help="G learning rate (default 0.0025)")
    g.add_argument("--dlr", type=float, help="D learning rate (default 0.002)")
    g.add_argument("--aug", default=d.aug.mode, choices=AUG_MODES,
                   help="ada: adaptive augmentation (default); fixed: constant --p; noaug: none")
    g.add_argument("--target", type=float, default=d.aug.target, help="ADA target for E[sign(D(real))] (%(default)s)")
    g.add_argument("--p", type=float, default=d.aug.p, help="augmentation probability for --aug fixed (%(default)s)")
    g = p.add_argument_group("schedule")
    g.add_argument("--kimg", type=float, default=d.schedule.kimg, help="train for this many thousand real images")
    g.add_argument("--tick", type=float, default=d.schedule.tick, help="report progress every this many kimg")
    g.add_argument("--snap", type=int, default=d.schedule.snap,
                   help="checkpoint + fakes grid every this many ticks (0 = only at the end)")
    g.add_argument("--keep", type=int, default=d.schedule.keep, help="checkpoints to keep (latest N)")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, default=d.run.workers, help="Ray Train workers (one per GPU)")
    g.add_argument("--cpus-per-worker", type=float, default=d.run.cpus_per_worker,
                   help="CPUs reserved per worker on CPU-only nodes (fractional leaves room for data loading)")
    g.add_argument("--use-gpu", type=_bool, help="force GPUs on/off (default: on when the cluster has GPUs or its "
                   "autoscaler can launch them, docs/cluster.md)")
    g.add_argument("--storage", default=d.run.storage, help="where checkpoints go: local dir or s3://bucket/prefix")
    g.add_argument("--run-name", help="run name under --storage; the same name resumes (default: derived "
                   "from the data and the settings, so re-running the same command resumes)")
    g.add_argument("--resume", help="start a NEW run from weights: checkpoint dir/URI, network file (.safetensors), "
                   "official .pkl or models:/NAME@ALIAS")
    g.add_argument("--seed", type=int, default=d.run.seed, help="random seed (%(default)s)")
    g.add_argument("--max-failures", type=int, default=d.run.max_failures,
                   help="restart failed workers from the last checkpoint this many times (%(default)s)")
    g.add_argument("--max-corrupt", type=float, default=d.run.max_corrupt,
                   help="distinct corrupt samples tolerated before the run stops: 0 = none, below 1 = that "
                        "fraction of the images but at least one, 1 or more = a count (%(default)s)")
    g = p.add_argument_group("tracking")
    g.add_argument("--metrics", default="", help="comma-separated metrics computed at each snapshot, e.g. eqt,swd")
    g.add_argument("--quality", type=_bool, default=d.run.quality,
                   help="1 = a cheap SWD of G_ema against a fixed set of reals at every snapshot: in the tick line, "
                        "MLflow (quality/swd) and progress.png beside the checkpoints; 0 = off (default 1)")
    g.add_argument("--experiment", help="MLflow experiment (default: the data set's name)")
    g.add_argument("--model-name", help="MLflow registered model for the EMA generator (default: derived)")
    g.add_argument("--tracking", type=_bool, default=True,
                   help="log to MLflow (MLFLOW_TRACKING_URI, else ./mlflow.db) (1/0, default 1)")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The (unresolved) TrainConfig described by parsed flags."""
    return TrainConfig(
        model=ModelConfig(cfg=a.cfg, cbase=a.cbase, cmax=a.cmax, map_depth=a.map_depth, mbstd_group=a.mbstd_group,
                          fp32=a.fp32, freezed=a.freezed),
        optim=OptimConfig(glr=a.glr, dlr=a.dlr),
        loss=LossConfig(gamma=a.gamma),
        aug=AugConfig(mode=a.aug, target=a.target, p=a.p),
        schedule=ScheduleConfig(batch=a.batch, batch_per_worker=a.batch_per_worker, kimg=a.kimg, tick=a.tick,
                                snap=a.snap, keep=a.keep),
        data=DataConfig(uri=a.data, mirror=a.mirror, cond=a.cond),
        run=RunConfig(workers=a.workers, cpus_per_worker=a.cpus_per_worker, use_gpu=a.use_gpu, storage=a.storage,
                      run_name=a.run_name, resume=a.resume, seed=a.seed, max_failures=a.max_failures,
                      max_corrupt=a.max_corrupt,
                      metrics=tuple(m for m in a.metrics.split(",") if m), quality=a.quality, experiment=a.experiment,
                      model_name=a.model_name,
                      callbacks="pipeline.tracking:make_callbacks" if a.tracking else None),
    )


def gamma_note(given: float | None) -> str:
    """What the run line says after the gamma value: nothing when --gamma was given, else where it came from."""
    if given is not None:
        return ""
    return " (default 2*(res/256)^2; the official tool requires --gamma)"


def _local_ray_env() -> None:
    """Before Ray is imported: a local instance binds to loopback only and writes no auth-token file
    (which would switch a later `ray start --head` to token auth), PLATFORM.md "Ray"."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _init_ray(dashboard: bool = True) -> None:
    """Join RAY_ADDRESS's cluster, or start a private local instance, with log_to_driver=False: the user reads
    our lines (the run, one line per tick, the summary), and Ray's own worker, controller and Ray Data output
    stays in Ray's log files (`fit` relays the tick lines from the Train controller itself).

    dashboard: start the local instance with its dashboard on 127.0.0.1 -- it serves the state API through which
    Ray Train's placement-group cleaner watches the Train controller (without it the cleaner warns every few
    seconds, and the CPUs of a Train run whose controller was killed, e.g. a trial stopped early by Tune, are
    never released)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        # RAY_ADDRESS set (e.g. by `ray job submit`): join that cluster; else a private local instance,
        # never a stranger's cluster on a shared machine.
        local = not os.environ.get("RAY_ADDRESS")
        extra = {"dashboard_host": "127.0.0.1"} if dashboard and local else {}
        try:
            ray.init(address="local" if local else None, include_dashboard=dashboard and local,
                     configure_logging=False, log_to_driver=False, **extra)
        except Exception as e:
            if "timed out during startup" in str(e):  # Ray gives a local raylet a fixed 30 s to register
                raise SystemExit("error: Ray could not start a local node within 30 s (this machine is too "
                                 "busy); run the command again, or start one with `ray start --head` and set "
                                 "RAY_ADDRESS=auto") from None
            raise
    ray.data.DataContext.get_current().enable_progress_bars = False  # one progress line per tick instead
    ray.data.DataContext.get_current().print_on_execution_start = False


def demo_argv(argv: list[str]) -> list[str] | None:
    """The flags of a run on the bundled demo set (no --data, or --data demo:emoji): the embedded default's
    settings, then the user's flags over them; None when `argv` names other data."""
    parsed = make_parser().parse_args(argv)
    if parsed.data not in (None, DEMO_DATA):
        return None
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    # Only flags that keep the trajectory: the run keeps its readable name (and resumes with a larger --kimg).
    name = ["--run-name", DEMO_RUN_NAME] if given <= SAME_RUN_FLAGS else []
    full = DEMO_ARGS + name + list(argv)
    if "--model-name" not in given:  # the registered name the README's commands use: stylegan3-emoji-t (or -r)
        full += ["--model-name", "stylegan3-emoji-" + make_parser().parse_args(full).cfg.removeprefix("stylegan3-")]
    return full


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _local_ray_env()
    full = demo_argv(argv)
    demo = full is not None
    args = make_parser().parse_args(full if demo else argv)
    if demo:
        args.data = None
    cfg = config_from_args(args)
    from pipeline.training.trainer import choose_device, fit, latest_checkpoint, prepare, run_dir

    try:
        cfg.validate()  # flag-only checks first: fail before building or reading any data
        if demo:
            from pipeline.data import ensure_demo_shards

            print(f"demo data: {DEMO_DATA} shards at {DEMO_RESOLUTION}x{DEMO_RESOLUTION} in {DEMO_CACHE}"
                  + ("" if argv else " (the embedded default)"), flush=True)
            uri = ensure_demo_shards(DEMO_CACHE, DEMO_RESOLUTION, max_images=DEMO_IMAGES)
            cfg = cfg.replace(data={"uri": uri})
        cfg, info = prepare(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.run.callbacks:
        from pipeline.tracking import tracking_uri

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # resolved here: workers run in other directories
    _init_ray()
    try:
        cfg = choose_device(cfg)  # prints the choice line: GPUs or CPUs, and why
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    previous = latest_checkpoint(cfg)
    print(f"run {cfg.run.run_name}: {cfg.model.cfg} {cfg.model.resolution}x{cfg.model.resolution}, "
          f"{info.num_images} images from {cfg.data.uri}, batch {cfg.schedule.batch} on {cfg.run.workers} "
          f"worker(s), gamma {cfg.loss.gamma:g}{gamma_note(args.gamma)}, {cfg.schedule.kimg:g} kimg", flush=True)
    print(f"  checkpoints: {run_dir(cfg)}" + (f"  (resuming from {previous})" if previous else ""), flush=True)
    if cfg.data.cond and info.label_counts is None:
        print(f"  note: the manifest of {cfg.data.uri} predates label counts: fake labels come from each real "
              "batch; rebuild the set (python -m pipeline.dataset build) to draw them from the whole set", flush=True)
    start = time.time()
    result = fit(cfg, info)
    wall = time.time() - start
    if result.error is not None:
        print(f"error: training failed after {wall:.0f} s: {result.error}", file=sys.stderr)
        return 1
    last = latest_checkpoint(cfg)
    kimg = (result.metrics or {}).get("kimg")
    print(f"\ndone in {wall / 60:.1f} min" + (f" at {kimg:g} kimg" if kimg is not None else ""))
    print(f"  latest checkpoint: {last}")
    if last:
        print(f"  fakes grid:        {last}/fakes.png")
    bad = int((result.metrics or {}).get("corrupt_skipped") or 0)
    if bad:
        from pipeline.training.checkpoint import CORRUPT_FILE

        print(f"  bad samples:       {bad} skipped, never decoded again (list: {last}/{CORRUPT_FILE})")
    if cfg.run.callbacks:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        print(f"  MLflow:            {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    for line in progress_summary(run_dir(cfg)):
        print(line)
    print("next:")
    if last:
        print(f"  python -m pipeline.generate --model {last} --seeds 0-7 --outdir outputs/fakes")
    again = [a for i, a in enumerate(argv)
             if not a.startswith("--kimg=") and a != "--kimg" and (i == 0 or argv[i - 1] != "--kimg")]
    again += ["--kimg", f"{cfg.schedule.kimg * 10:g}"]
    print("  python -m pipeline.train " + shlex.join(again) + "   # continues this run to a larger --kimg")
    return 0


def progress_summary(directory: str) -> list[str]:
    """The summary's last lines: the quality metric at its first and last snapshot, and where progress.png is."""
    import json

    from pipeline import storage
    from pipeline.training.progress import HISTORY_FILE, PROGRESS_FILE, QUALITY_KEY, History

    png, data = storage.join(directory, PROGRESS_FILE), storage.join(directory, HISTORY_FILE)
    if not storage.exists(png):
        return []
    lines = []
    if storage.exists(data):
        q = History(json.loads(storage.read_bytes(data))).quality()
        if q:
            lines.append(f"  quality (SWD):     {q[0][1]:.1f} at {q[0][0]:g} kimg -> {q[-1][1]:.1f} at {q[-1][0]:g} kimg  "
                         f"(x1e3 on fixed reals, lower is better; MLflow {QUALITY_KEY.replace('/', '.')})")
    return lines + [f"  progress picture:  {png}  (quality and losses vs kimg, latest fakes)"]


if __name__ == "__main__":
    sys.exit(main())
