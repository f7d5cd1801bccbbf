"""Network configuration: frozen dataclasses shared by training, tuning, tracking and the network file.

`GeneratorConfig` / `DiscriminatorConfig` hold exactly the constructor arguments of the networks
(docs/algorithm.md "Mapping network", "Synthesis schedule", "Configs T and R", "Discriminator", "Official training options"). `NetworkConfig` bundles both with the preset name; its `to_dict()`
is JSON-safe and is what MLflow logs and what `models.save_network` stores next to the weights.

Channel numbers in `GeneratorConfig` are the values the generator really uses, i.e. *after* config
R's doubling (docs/algorithm.md "Configs T and R"); `build_config` takes them *before* the doubling, like train.py's
`--cbase/--cmax`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

PRESETS = ("stylegan3-t", "stylegan3-r")

# train.py's default batch; it sets G's magnitude-EMA decay from the batch size (docs/algorithm.md "Official training options").
DEFAULT_BATCH_SIZE = 32


def magnitude_ema_beta_for_batch(batch_size: int) -> float:
    """Decay of the synthesis layers' magnitude EMA that train.py uses for a given total batch
    (docs/algorithm.md "StyleGAN3 training at a glance", "Official training options"): `0.5 ** (batch / 20000)`, i.e. a half-life of 20k images."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return 0.5 ** (batch_size / 20000)


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """StyleGAN3 generator hyper-parameters (docs/algorithm.md "Mapping network", "Synthesis schedule", "Configs T and R")."""

    img_resolution: int = 256            # output side length in pixels (power of two)
    img_channels: int = 3                # 1 (grey), 3 (RGB) or 4 (RGBA)
    z_dim: int = 512                     # latent z size
    c_dim: int = 0                       # conditioning label size, 0 = unconditional
    w_dim: int = 512                     # intermediate latent w size
    map_depth: int = 2                   # mapping-network FC layers (train.py --map-depth)
    mapping_lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping FC layers
    w_avg_beta: float = 0.998            # decay of the tracked mean w (truncation centre)
    channel_base: int = 32768            # channels = rint(min(channel_base/2 / cutoff, channel_max)); R: 65536
    channel_max: int = 512               # upper bound on channels per layer; R: 1024
    conv_kernel: int = 3                 # 3 for T, 1 for R (ToRGB is always 1x1)
    use_radial_filters: bool = False     # R: radial jinc*Kaiser down filters in non-critical layers
    num_layers: int = 14                 # synthesis layers excluding ToRGB
    num_critical: int = 2                # critically sampled layers at the end
    first_cutoff: float = 2.0            # cutoff of the first layer, cycles per unit
    first_stopband: float = 2 ** 2.1     # min. stopband of the first layer
    last_stopband_rel: float = 2 ** 0.3  # min. stopband of the last layer relative to its cutoff
    margin_size: int = 10                # extra pixels on each side of the internal canvas
    output_scale: float = 0.25           # multiplier applied to the ToRGB output
    num_fp16_res: int = 4                # layers with sampling_rate * 2**num_fp16_res > res run fp16 (CUDA only)
    conv_clamp: Optional[float] = 256.0  # clamp of pre-activation values (fp16 safety); None = off
    filter_size: int = 6                 # filter taps per unit of the resampling factor
    lrelu_upsampling: int = 2            # oversampling of the nonlinearity
    magnitude_ema_beta: float = magnitude_ema_beta_for_batch(DEFAULT_BATCH_SIZE)  # E[x^2] EMA decay

    def __post_init__(self) -> None:
        _check_resolution(self.img_resolution)
        if self.img_channels not in (1, 2, 3, 4):
            raise ValueError(f"img_channels must be 1..4, got {self.img_channels}")
        if self.conv_kernel not in (1, 3, 5):
            raise ValueError(f"conv_kernel must be 1, 3 or 5, got {self.conv_kernel}")
        if self.z_dim <= 0 or self.w_dim <= 0 or self.c_dim < 0 or self.map_depth < 1:
            raise ValueError(f"invalid dims z_dim={self.z_dim} w_dim={self.w_dim} c_dim={self.c_dim} "
                             f"map_depth={self.map_depth}")
        if not 0.0 <= self.magnitude_ema_beta < 1.0:
            raise ValueError(f"magnitude_ema_beta must be in [0, 1), got {self.magnitude_ema_beta}")

    @property
    def num_ws(self) -> int:
        """Number of w vectors consumed by synthesis: input + num_layers + ToRGB."""
        return self.num_layers + 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        return cls(**_checked_fields(cls, d, "generator config"))


@dataclass(frozen=True)
class DiscriminatorConfig:
    """StyleGAN2 residual discriminator hyper-parameters (docs/algorithm.md "Discriminator")."""

    img_resolution: int = 256
    img_channels: int = 3
    c_dim: int = 0
    channel_base: int = 32768            # ch(res') = min(channel_base // res', channel_max); never doubled for R
    channel_max: int = 512
    num_fp16_res: int = 4                # blocks at the 4 highest resolutions run fp16 (CUDA only)
    conv_clamp: Optional[float] = 256.0
    mbstd_group_size: int = 4            # minibatch-std group size (batch per GPU must be divisible by it)
    mbstd_num_channels: int = 1          # minibatch-std feature channels
    cmap_dim: Optional[int] = None       # conditioning projection size; None = channels at 4x4
    mapping_layers: int = 8              # conditional mapping depth (StyleGAN2 mapping; not --map-depth)
    freeze_layers: int = 0               # the first N conv layers (fromrgb, conv0, conv1, skip per block, from
                                         # the highest resolution) are frozen buffers (train.py --freezed)

    def __post_init__(self) -> None:
        _check_resolution(self.img_resolution)
        if self.img_channels not in (1, 2, 3, 4):
            raise ValueError(f"img_channels must be 1..4, got {self.img_channels}")
        if self.mbstd_group_size < 1 or self.mbstd_num_channels < 1:
            raise ValueError("mbstd_group_size and mbstd_num_channels must be >= 1")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiscriminatorConfig":
        return cls(**_checked_fields(cls, d, "discriminator config"))


@dataclass(frozen=True)
class NetworkConfig:
    """Both networks plus the preset they were derived from (`stylegan3-t`, `stylegan3-r` or `custom`)."""

    preset: str = "stylegan3-t"
    G: GeneratorConfig = field(default_factory=GeneratorConfig)
    D: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "G": self.G.to_dict(), "D": self.D.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetworkConfig":
        d = _checked_fields(cls, d, "network config")
        return cls(preset=d.get("preset", "custom"),
                   G=GeneratorConfig.from_dict(d["G"]) if "G" in d else GeneratorConfig(),
                   D=DiscriminatorConfig.from_dict(d["D"]) if "D" in d else DiscriminatorConfig())


def _checked_fields(cls, d: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise TypeError(f"{what} must be a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    return dict(d)


# Overrides accepted by build_config, and which network(s) each one applies to.
_G_ONLY = {"z_dim", "w_dim", "map_depth", "magnitude_ema_beta", "output_scale", "margin_size",
           "num_layers", "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel",
           "filter_size", "lrelu_upsampling", "conv_kernel", "use_radial_filters", "mapping_lr_multiplier",
           "w_avg_beta"}
_D_ONLY = {"mbstd_group_size", "mbstd_num_channels", "cmap_dim", "mapping_layers", "freeze_layers"}
_BOTH = {"c_dim", "img_channels", "conv_clamp", "num_fp16_res", "channel_base", "channel_max"}


def build_config(preset: str, resolution: int, batch_size: int = DEFAULT_BATCH_SIZE,
                 **overrides: Any) -> NetworkConfig:
    """Network description for a preset, as train.py sets it (docs/algorithm.md "Official training options").

    preset: "stylegan3-t" | "stylegan3-r". resolution: output side in pixels.
    batch_size: total batch; sets magnitude_ema_beta = 0.5 ** (batch/20000) unless overridden.
    overrides: any of channel_base / channel_max (given *before* R's doubling of G's values, like
    --cbase/--cmax), map_depth, c_dim, img_channels, z_dim, w_dim, conv_clamp, num_fp16_res,
    magnitude_ema_beta, mbstd_group_size, and the other GeneratorConfig/DiscriminatorConfig fields.
    `fp32=True` is train.py's --fp32: num_fp16_res 0 and conv_clamp None for both networks.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    overrides = dict(overrides)
    if overrides.pop("fp32", False):
        overrides["num_fp16_res"] = 0
        overrides["conv_clamp"] = None
    unknown = sorted(set(overrides) - _G_ONLY - _D_ONLY - _BOTH)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; allowed: {sorted(_G_ONLY | _D_ONLY | _BOTH)}")
    cbase = int(overrides.pop("channel_base", 32768))
    cmax = int(overrides.pop("channel_max", 512))
    is_r = preset == "stylegan3-r"
    g = dict(img_resolution=resolution, channel_base=cbase * (2 if is_r else 1),
             channel_max=cmax * (2 if is_r else 1),
             conv_kernel=1 if is_r else 3, use_radial_filters=is_r,
             magnitude_ema_beta=magnitude_ema_beta_for_batch(batch_size))
    d = dict(img_resolution=resolution, channel_base=cbase, channel_max=cmax)
    for k, v in overrides.items():
        if k in _G_ONLY or k in _BOTH:
            g[k] = v
        if k in _D_ONLY or k in _BOTH:
            d[k] = v
    return NetworkConfig(preset=preset, G=GeneratorConfig(**g), D=DiscriminatorConfig(**d))


__all__ = ["PRESETS", "DEFAULT_BATCH_SIZE", "GeneratorConfig", "DiscriminatorConfig", "NetworkConfig",
           "build_config", "magnitude_ema_beta_for_batch"]
