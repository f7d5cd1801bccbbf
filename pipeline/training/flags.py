"""The training flags: pipeline.train's command line (pipeline.tune adds its sweep flags to the same table) and the
TrainConfig a parsed command line describes. Spelled like the official train.py; --workers replaces --gpus."""

from __future__ import annotations

import argparse

from pipeline.data.demo import DEMO_DATA, DEMO_RESOLUTION
from pipeline.training.config import AUG_MODES, PRESETS, TrainConfig


def parse_bool(text: str) -> bool:
    """argparse type of the 0/1 flags (also true/false, yes/no, on/off)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {text!r}")


def add_train_flags(p: argparse.ArgumentParser, skip=frozenset()) -> argparse.ArgumentParser:
    """Add pipeline.train's flags to `p` in their groups, defaults from TrainConfig; flags named in `skip` are left
    out (pipeline.tune adds its own --gamma, --glr, ... that take search spaces). Returns `p`."""
    d = TrainConfig()

    class _Group:  # add_argument that leaves out the skipped flags
        def __init__(self, title: str):
            self.group = p.add_argument_group(title)

        def add_argument(self, *names, **kw):
            if names[0] not in skip:
                self.group.add_argument(*names, **kw)

    g = _Group("model")
    g.add_argument("--cfg", default=d.model.preset, choices=list(PRESETS),
                   help="architecture: stylegan3-t (translation equivariant) or stylegan3-r (also rotation)")
    g.add_argument("--cbase", type=int, default=d.model.cbase, help="channel base (capacity), default %(default)s")
    g.add_argument("--cmax", type=int, default=d.model.cmax, help="max channels per layer, default %(default)s")
    g.add_argument("--map-depth", type=int, default=d.model.map_depth, help="mapping-network layers (%(default)s)")
    g.add_argument("--mbstd-group", type=int, default=d.model.mbstd_group,
                   help="minibatch-std group size of D; each forward pass (--batch-per-worker) must be a multiple "
                        "(%(default)s)")
    g.add_argument("--fp32", type=parse_bool, default=d.model.fp32,
                   help="1 = no fp16 layers on GPUs (num_fp16_res 0, conv_clamp None for G and D), as the official "
                        "--fp32; CPUs always compute in fp32 (default 0)")
    g.add_argument("--freezed", type=int, default=d.model.freezed,
                   help="freeze the first N conv layers of D, counted from the highest resolution (fromrgb, conv0, "
                        "conv1, skip per block), as the official --freezed; for fine-tuning (%(default)s)")
    g = _Group("data")
    g.add_argument("--data", help="shard set built by `python -m pipeline.dataset build` (dir or s3://bucket/prefix); "
                   f"no --data = the bundled {DEMO_DATA} (100 smiley faces), demo:emoji = all 4,009 bundled emoji; "
                   f"a demo set trains at {DEMO_RESOLUTION}x{DEMO_RESOLUTION} with the embedded default's settings "
                   "under the flags you give")
    g.add_argument("--mirror", type=parse_bool, default=False, help="add x-flipped copies of the images (0/1)")
    g.add_argument("--cond", type=parse_bool, default=False, help="class-conditional training from the labels (0/1)")
    g = _Group("optimisation")
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
    g = _Group("schedule")
    g.add_argument("--kimg", type=float, default=d.schedule.kimg, help="train for this many thousand real images")
    g.add_argument("--tick", type=float, default=d.schedule.tick, help="report progress every this many kimg")
    g.add_argument("--snap", type=int, default=d.schedule.snap,
                   help="checkpoint + fakes grid every this many ticks (0 = only at the end)")
    g.add_argument("--keep", type=int, default=d.schedule.keep, help="checkpoints to keep (latest N)")
    g = _Group("run")
    g.add_argument("--workers", type=int, default=d.run.workers, help="Ray Train workers (one per GPU)")
    g.add_argument("--cpus-per-worker", type=float, default=d.run.cpus_per_worker,
                   help="CPUs reserved per worker on CPU-only nodes (fractional leaves room for data loading)")
    g.add_argument("--use-gpu", type=parse_bool, help="force GPUs on/off (default: on when the cluster has GPUs or its "
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
    g = _Group("tracking")
    g.add_argument("--metrics", default="", help="comma-separated metrics computed at each snapshot, e.g. eqt,swd")
    g.add_argument("--quality", type=parse_bool, default=d.run.quality,
                   help="1 = a cheap SWD of G_ema against a fixed set of reals at every snapshot: in the tick line, "
                        "MLflow (quality/swd) and progress.png beside the checkpoints; 0 = off (default 1)")
    g.add_argument("--experiment", help="MLflow experiment (default: the data set's name)")
    g.add_argument("--model-name", help="MLflow registered model for the EMA generator (default: derived)")
    g.add_argument("--tracking", type=parse_bool, default=True,
                   help="log to MLflow (MLFLOW_TRACKING_URI, else ./mlflow.db) (1/0, default 1)")
    return p


# Where each flag lands in the TrainConfig (the flag's argparse dest is its name without the dashes, "-" -> "_"):
# the one place that links the command line to the config. Flags missing here are the commands' own.
FLAG_FIELDS = {
    "--cfg": "model.preset", "--cbase": "model.cbase", "--cmax": "model.cmax", "--map-depth": "model.map_depth",
    "--mbstd-group": "model.mbstd_group", "--fp32": "model.fp32", "--freezed": "model.freezed",
    "--data": "data.uri", "--mirror": "data.mirror", "--cond": "data.cond",
    "--batch": "schedule.batch", "--batch-per-worker": "schedule.forward_batch", "--gamma": "loss.gamma",
    "--glr": "optim.glr", "--dlr": "optim.dlr", "--aug": "aug.mode", "--target": "aug.target", "--p": "aug.p",
    "--kimg": "schedule.kimg", "--tick": "schedule.tick", "--snap": "schedule.snap", "--keep": "schedule.keep",
    "--workers": "run.workers", "--cpus-per-worker": "run.cpus_per_worker", "--use-gpu": "run.use_gpu",
    "--storage": "run.storage", "--run-name": "run.run_name", "--resume": "run.resume", "--seed": "run.seed",
    "--max-failures": "run.max_failures", "--max-corrupt": "run.max_corrupt", "--metrics": "run.metrics",
    "--quality": "run.quality", "--experiment": "tracking.experiment", "--model-name": "tracking.model_name",
    "--tracking": "tracking.enabled",
}
# Flags whose text becomes another type in the config.
_CONVERT = {"--metrics": lambda text: tuple(m for m in text.split(",") if m)}


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The (unresolved) TrainConfig described by parsed flags (FLAG_FIELDS)."""
    sections: dict[str, dict] = {}
    for flag, path in FLAG_FIELDS.items():
        value = getattr(a, flag[2:].replace("-", "_"))
        section, key = path.split(".")
        sections.setdefault(section, {})[key] = _CONVERT[flag](value) if flag in _CONVERT else value
    return TrainConfig().replace(**sections)


def gamma_note(given: float | None) -> str:
    """What the run line says after the gamma value: nothing when --gamma was given, else where it came from."""
    if given is not None:
        return ""
    return " (default 2*(res/256)^2; the official tool requires --gamma)"
