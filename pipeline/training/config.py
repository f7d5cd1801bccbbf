"""The whole description of a training run as frozen dataclasses (docs/algorithm.md "Official training options").

`TrainConfig` is the one config of a run: the command (pipeline.train, pipeline.tune) builds it once on the driver,
every Ray Train worker receives it (as `to_dict()`), a checkpoint stores it and MLflow logs it (`flatten()`). Once
resolved it also holds the network description (`network`, a `models.NetworkConfig` that the workers build G and D
from) and the tracking settings (`tracking`: where and how the run is logged; Tune fills in its sweep's fields).
Presets are plain tables (`PRESETS`).
Values left as None are derived by `TrainConfig.resolved()` from the batch size, the resolution and
`--resume`, exactly as the official train.py derives them (docs/algorithm.md "Official training options"):

- ema_kimg = batch·10/32, blur_fade_kimg = batch·200/32 (R only; T has no blur),
- gamma = 2·(res/256)² (the rule of thumb, γ ∝ res², 2 at 256²: docs/algorithm.md "Recommended settings") when not given,
- --resume: ada_kimg 100, no EMA ramp-up, blur_init_sigma 0.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models import NetworkConfig

PRESETS: dict[str, dict[str, Any]] = {
    # docs/algorithm.md "Official training options": what train.py sets for each --cfg.
    "stylegan3-t": {"glr": 0.0025, "dlr": 0.002, "map_depth": 2, "blur_init_sigma": 0.0},
    "stylegan3-r": {"glr": 0.0025, "dlr": 0.002, "map_depth": 2, "blur_init_sigma": 10.0},
}

AUG_MODES = ("ada", "fixed", "noaug")


class ConfigError(ValueError):
    """A run description that cannot work; the message says which value and what to do."""


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "stylegan3-t"  # architecture preset (--cfg): stylegan3-t (translation eq.) | stylegan3-r (rotation eq.)
    resolution: int | None = None  # output resolution in px (square, power of 2); None = the dataset's
    cbase: int = 32768  # channel base; channels at a layer = min(cbase / size, cmax) (R doubles both, docs/algorithm.md "Official training options")
    cmax: int = 512  # channel maximum
    map_depth: int = 2  # mapping-network layers (StyleGAN3: 2)
    mbstd_group: int = 4  # minibatch-std group size of D; the forward batch must be a multiple of it
    img_channels: int | None = None  # 1 or 3; None = the dataset's
    c_dim: int | None = None  # label dimension (0 = unconditional); None = the dataset's (with --cond)
    z_dim: int = 512  # latent size
    w_dim: int = 512  # intermediate latent size
    fp32: bool = False  # official --fp32: no fp16 layers on GPUs (num_fp16_res 0, conv_clamp None for G and D)
    freezed: int = 0  # official --freezed: the first N conv layers of D (from the highest resolution) get no update


@dataclass(frozen=True)
class OptimConfig:
    glr: float | None = None  # G Adam learning rate; None = preset (0.0025)
    dlr: float | None = None  # D Adam learning rate; None = preset (0.002)
    beta1: float = 0.0  # Adam beta1 for both nets
    beta2: float = 0.99  # Adam beta2 for both nets
    eps: float = 1e-8  # Adam epsilon
    d_reg_interval: int = 16  # lazy R1 every this many steps (docs/algorithm.md "Training phases"); lr and betas adjusted accordingly


@dataclass(frozen=True)
class LossConfig:
    gamma: float | None = None  # R1 weight; None = 2·(res/256)² (rule of thumb: docs/algorithm.md "Recommended settings")
    blur_init_sigma: float | None = None  # D-input blur at step 0, px (half width at half max); None = preset
    blur_fade_kimg: float | None = None  # blur fades linearly to 0 over this many kimg; None = batch·200/32


@dataclass(frozen=True)
class AugConfig:
    mode: str = "ada"  # ada = adaptive p | fixed = constant p | noaug = no augmentation pipe
    target: float = 0.6  # ADA target for E[sign(D(real))]
    p: float = 0.2  # augmentation probability for --aug fixed
    interval: int = 4  # ADA adjusts p every this many steps
    ada_kimg: float | None = None  # p can move 0→1 in this many kimg; None = 500 (100 with --resume)


@dataclass(frozen=True)
class ScheduleConfig:
    batch: int = 32  # global batch (images per step over all workers)
    # images per forward pass on one worker (--batch-per-worker, the official --batch-gpu); smaller than the worker
    # batch (batch / workers) = gradient accumulation over worker_batch / forward_batch passes; None = worker batch
    forward_batch: int | None = None
    kimg: float = 25000  # train until this many thousand real images have been shown to D
    tick: float = 4  # report metrics and progress every this many kimg
    snap: int = 50  # checkpoint (+ fakes grid) every this many ticks; 0 = only at the end
    keep: int = 3  # keep this many latest checkpoints (plus the best one when a quality metric is reported)
    ema_kimg: float | None = None  # half-life of G_ema in kimg; None = batch·10/32
    ema_rampup: float | None = 0.05  # EMA half-life ≤ cur_nimg·rampup early on; None = off


@dataclass(frozen=True)
class DataConfig:
    uri: str | None = None  # shard set (local dir, file:// or s3://); None = the bundled demo:emoji set
    mirror: bool = False  # add x-flipped copies of every image (doubles the dataset)
    cond: bool = False  # train a class-conditional model from the dataset's labels


@dataclass(frozen=True)
class RunOptions:
    workers: int = 1  # Ray Train workers (one per GPU; on CPU, processes sharing the node's cores)
    cpus_per_worker: float = 0.5  # CPUs reserved per worker on CPU-only nodes (fractional leaves room for Ray Data)
    use_gpu: bool | None = None  # None = use GPUs when the cluster has any
    storage: str = "outputs/runs"  # where checkpoints go (local dir or s3://bucket/prefix); same storage +
    run_name: str | None = None  # same run name = automatic resume; None = derived from data/cfg/time
    resume: str | None = None  # start a NEW run from these weights (checkpoint URI, network file, official .pkl)
    seed: int = 0  # global seed; worker seeds derive from (seed, rank, cur_nimg)
    max_failures: int = 3  # restart dead workers from the last checkpoint this many times
    # distinct corrupt samples (shard, key) tolerated before the run stops: 0 = none, a value in (0, 1) = that
    # fraction of the set's images but at least one, >= 1 = a count (pipeline.data.reader.corrupt_budget)
    max_corrupt: float = 0.01
    metrics: tuple[str, ...] = ()  # quality/equivariance metrics computed at each snapshot (e.g. eqt, swd)
    # the cheap quality curve: SWD of G_ema against a fixed set of reals at every snapshot, in the tick line,
    # MLflow and progress.png (pipeline.training.progress); False = off
    quality: bool = True


@dataclass(frozen=True)
class TrackingConfig:
    """How the run is logged to MLflow by the rank-0 worker (pipeline.tracking); filled in on the driver."""

    enabled: bool = False  # log to MLflow at all (--tracking, 1 on the command line; off for library callers)
    uri: str | None = None  # tracking URI, resolved on the driver (the workers run in other directories); None = env
    experiment: str | None = None  # --experiment; None = the data set's name
    model_name: str | None = None  # --model-name: registered model of the EMA generator; None = derived
    metric_samples: int = 1000  # generated (and real) images per snapshot metric (--metrics); the paper's 50k is slow
    register: bool = True  # register the generator at every snapshot (a sweep registers only its best trial)
    parent_run_id: str | None = None  # the run is a child of this MLflow run (a sweep's trials)
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags; a restarted child finds its run by them
    reals_uri: str | None = None  # real images for the metrics, read once by the driver (torch.save'd uint8 NCHW)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunOptions = field(default_factory=RunOptions)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    network: NetworkConfig | None = None  # G and D as models builds them; set by resolved() from model + schedule

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-safe nested dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys raise ConfigError naming them. Also reads the dicts that earlier
        versions stored in checkpoints and MLflow (their key names are mapped: LEGACY_KEYS)."""
        d = _upgrade(d)
        sections: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "network":
                if d.get("network") is not None:
                    from models import NetworkConfig  # here: models loads torch, which --help does not need

                    sections["network"] = NetworkConfig.from_dict(d["network"])
                continue
            sub = dict(d.get(f.name, {}))
            sub_cls = f.default_factory  # type: ignore[misc]
            known = {sf.name for sf in fields(sub_cls)}
            unknown = set(sub) - known
            if unknown:
                raise ConfigError(f"unknown config key(s) {sorted(unknown)} in section '{f.name}'")
            if "metrics" in sub:
                sub["metrics"] = tuple(sub["metrics"])
            sections[f.name] = sub_cls(**sub)
        return cls(**sections)

    def flatten(self) -> dict[str, Any]:
        """Flat {"section.key": value} dict for MLflow params (None kept as None, tuples joined by ','), nested
        sections by their path ("network.G.channel_base", "tracking.tags.NAME")."""
        out: dict[str, Any] = {}

        def add(prefix: str, values: dict[str, Any]) -> None:
            for k, v in values.items():
                if isinstance(v, dict):
                    add(f"{prefix}{k}.", v)
                else:
                    out[f"{prefix}{k}"] = ",".join(v) if isinstance(v, (tuple, list)) else v

        add("", {k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        return out

    def replace(self, **sections: dict[str, Any]) -> "TrainConfig":
        """Copy with some keys changed: cfg.replace(schedule={"kimg": 10}). A change of the model section or of the
        batch drops the resolved `network` (it was derived from them): resolve again before building networks."""
        new = replace(self, **{k: replace(getattr(self, k), **v) for k, v in sections.items()})
        if new.network is not None and (new.model != self.model or new.schedule.batch != self.schedule.batch):
            new = replace(new, network=None)
        return new

    def network_config(self) -> "NetworkConfig":
        """The models.NetworkConfig of a resolved model section (docs/algorithm.md "Official training options")."""
        import models  # here: models loads torch, which --help does not need

        m = self.model
        if m.resolution is None or m.img_channels is None or m.c_dim is None:
            raise ConfigError("the network is derived from a resolved config: call TrainConfig.resolved() first")
        return models.build_config(
            m.preset, m.resolution, channel_base=m.cbase, channel_max=m.cmax, map_depth=m.map_depth, c_dim=m.c_dim,
            img_channels=m.img_channels, z_dim=m.z_dim, w_dim=m.w_dim, mbstd_group_size=m.mbstd_group,
            magnitude_ema_beta=models.magnitude_ema_beta_for_batch(self.schedule.batch), fp32=m.fp32,
            freeze_layers=m.freezed)

    # ----------------------------------------------------------------------------------------------
    @property
    def worker_batch(self) -> int:
        """Images each worker takes per step (= batch / workers)."""
        return self.schedule.batch // max(self.run.workers, 1)

    @property
    def forward_batch(self) -> int:
        """Images per forward pass on a worker (schedule.forward_batch, else the whole worker batch); the worker
        batch is processed in worker_batch / forward_batch passes whose gradients add up (like --batch-gpu)."""
        return self.schedule.forward_batch or self.worker_batch

    def resolved(self, resolution: int | None = None, img_channels: int | None = None,
                 c_dim: int | None = None) -> "TrainConfig":
        """Fill every None that has a derived value; validate; return the fully explicit config.

        resolution / img_channels / c_dim: what the dataset holds (from its manifest); they must agree
        with explicit model values. Raises ConfigError with one clear sentence on any inconsistency.
        """
        self.validate()
        m, s, l, a, o = self.model, self.schedule, self.loss, self.aug, self.optim
        preset = PRESETS[m.preset]
        if resolution is not None and m.resolution is not None and resolution != m.resolution:
            raise ConfigError(
                f"the data has resolution {resolution}x{resolution} but the model was asked for "
                f"{m.resolution}x{m.resolution}; drop --resolution or rebuild the shards at {m.resolution}")
        res = m.resolution or resolution
        if res is None:
            raise ConfigError("the model resolution is unknown: give the data URI (its manifest says it)")
        if res < 16 or res & (res - 1):
            raise ConfigError(f"resolution {res} must be a power of two >= 16")
        resumed = self.run.resume is not None
        gamma = l.gamma if l.gamma is not None else 2.0 * (res / 256) ** 2
        blur_init = l.blur_init_sigma if l.blur_init_sigma is not None else preset["blur_init_sigma"]
        if resumed:
            blur_init = 0.0  # docs/algorithm.md "Official training options": fine-tuning starts without D blur
        blur_fade = l.blur_fade_kimg if l.blur_fade_kimg is not None else s.batch * 200 / 32
        ema_kimg = s.ema_kimg if s.ema_kimg is not None else s.batch * 10 / 32
        ema_rampup = None if resumed else s.ema_rampup
        ada_kimg = a.ada_kimg if a.ada_kimg is not None else (100.0 if resumed else 500.0)
        out = self.replace(
            model={"resolution": res,
                   "img_channels": m.img_channels if m.img_channels is not None else (img_channels or 3),
                   "c_dim": m.c_dim if m.c_dim is not None else ((c_dim or 0) if self.data.cond else 0)},
            optim={"glr": o.glr if o.glr is not None else preset["glr"],
                   "dlr": o.dlr if o.dlr is not None else preset["dlr"]},
            loss={"gamma": gamma, "blur_init_sigma": blur_init, "blur_fade_kimg": blur_fade},
            aug={"ada_kimg": ada_kimg},
            schedule={"ema_kimg": ema_kimg, "ema_rampup": ema_rampup,
                      "forward_batch": self.forward_batch},
        )
        return replace(out, network=out.network_config())

    def validate(self) -> None:
        """Checks that need no data and no cluster. Raises ConfigError with one clear sentence."""
        m, s, r, a = self.model, self.schedule, self.run, self.aug
        if m.preset not in PRESETS:
            raise ConfigError(f"unknown --cfg '{m.preset}': choose one of {', '.join(PRESETS)}")
        if a.mode not in AUG_MODES:
            raise ConfigError(f"unknown --aug '{a.mode}': choose one of {', '.join(AUG_MODES)}")
        if r.workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {r.workers})")
        if s.batch <= 0 or s.batch % r.workers:
            raise ConfigError(f"--batch {s.batch} is not divisible by --workers {r.workers}")
        per = s.batch // r.workers
        forward = s.forward_batch or per
        if per % forward:
            raise ConfigError(f"the per-worker batch {per} (= --batch {s.batch} / --workers {r.workers}) "
                              f"is not divisible by --batch-per-worker {forward}")
        if forward % m.mbstd_group:
            raise ConfigError(
                f"each worker's forward pass of {forward} images (--batch {s.batch} / --workers {r.workers}"
                f"{' / accumulation' if s.forward_batch else ''}) must be a multiple of the "
                f"minibatch-std group {m.mbstd_group}: make --batch a multiple of "
                f"{r.workers * m.mbstd_group} (workers x group)")
        if s.kimg <= 0 or s.tick <= 0:
            raise ConfigError(f"--kimg ({s.kimg}) and --tick ({s.tick}) must be positive")
        if s.snap < 0 or s.keep < 1:
            raise ConfigError(f"--snap ({s.snap}) must be >= 0 and --keep ({s.keep}) >= 1")
        if not 0 <= a.p <= 1:
            raise ConfigError(f"--p {a.p} must lie in [0, 1]")
        if r.max_corrupt < 0:
            raise ConfigError(f"--max-corrupt {r.max_corrupt} must be >= 0 (0 = no corrupt sample tolerated, "
                              "0.01 = 1% of the images, 5 = five samples)")
        if m.freezed < 0:
            raise ConfigError(f"--freezed {m.freezed} must be >= 0 (the number of D layers to freeze)")
        if r.cpus_per_worker <= 0:
            raise ConfigError(f"--cpus-per-worker {r.cpus_per_worker} must be positive")
        if self.tracking.metric_samples < 2:
            raise ConfigError(f"--metric-samples must be >= 2 (got {self.tracking.metric_samples})")


# Keys renamed since earlier versions wrote their config into checkpoints (state.pt "config") and MLflow params:
# (old section, old key) -> (new section, new key). TrainConfig.from_dict reads both.
LEGACY_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("model", "cfg"): ("model", "preset"),
    ("schedule", "batch_per_worker"): ("schedule", "forward_batch"),
    ("run", "experiment"): ("tracking", "experiment"),
    ("run", "model_name"): ("tracking", "model_name"),
}


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict with the key names of earlier versions (LEGACY_KEYS) renamed to today's."""
    out = {sec: dict(values) if isinstance(values, dict) else values for sec, values in d.items()}
    for (old_sec, old_key), (new_sec, new_key) in LEGACY_KEYS.items():
        section = out.get(old_sec)
        if isinstance(section, dict) and old_key in section:
            value = section.pop(old_key)
            out.setdefault(new_sec, {}).setdefault(new_key, value)
    run = out.get("run")
    if isinstance(run, dict) and "callbacks" in run:  # was "module:factory" of the tracking hook, or None
        out.setdefault("tracking", {}).setdefault("enabled", run.pop("callbacks") is not None)
    return out
