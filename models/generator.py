"""StyleGAN3 generator (configs T and R): mapping network, Fourier-feature input, alias-free
synthesis layers and ToRGB (docs/algorithm.md "Mapping network", "Synthesis network").

Module and attribute names follow the official layout so that state_dict keys, shapes and order
are identical (docs/algorithm.md "Generator state_dict order"). ``impl`` (the ops' backend, docs/ops.md "Backends")
is given to the constructors and passed down to every op call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from ops import check_impl, compute_dtype, filtered_lrelu, modulated_conv2d

from .config import GeneratorConfig
from .filters import design_lowpass_filter, filter_tensor
from .layers import FullyConnectedLayer, normalize_2nd_moment


# --------------------------------------------------------------------------------------------------
# Mapping network (docs/algorithm.md "Mapping network")

class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ c [N, c_dim]) -> ws [N, num_ws, w_dim] float32.

    Tracks `w_avg` [w_dim] (the truncation centre) when `update_emas=True`.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, impl: str = "auto"):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim, impl=impl)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier, impl=impl))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[0] != z.shape[0] or c.shape[1] != self.c_dim:
                got = None if c is None else list(c.shape)
                raise ValueError(f"c must have shape [{z.shape[0]}, {self.c_dim}], got {got}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# --------------------------------------------------------------------------------------------------
# Global schedule (docs/algorithm.md "Synthesis schedule")

@dataclass(frozen=True)
class LayerSpec:
    """Static description of one synthesis layer L_i (docs/algorithm.md "Synthesis schedule")."""

    name: str
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: float
    out_sampling_rate: float
    tmp_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    up: int
    down: int
    up_taps: int
    down_taps: int
    radial_down: bool
    padding: tuple
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    kernel_size: int


@dataclass(frozen=True)
class Schedule:
    """Per-entry arrays (length num_layers + 1) and the per-layer specs."""

    cutoffs: np.ndarray
    stopbands: np.ndarray
    sampling_rates: np.ndarray
    half_widths: np.ndarray
    sizes: np.ndarray
    channels: np.ndarray
    layers: tuple


def synthesis_schedule(cfg: GeneratorConfig) -> Schedule:
    """Compute cutoffs, sampling rates, sizes, channels and every layer's resampling parameters."""
    res = cfg.img_resolution
    n = cfg.num_layers
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + cfg.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels

    layers = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        is_crit = idx >= n - cfg.num_critical
        k = 1 if is_torgb else cfg.conv_kernel
        in_sr, out_sr = float(sampling_rates[prev]), float(sampling_rates[idx])
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else cfg.lrelu_upsampling)
        up = int(np.rint(tmp_sr / in_sr))
        down = int(np.rint(tmp_sr / out_sr))
        assert in_sr * up == tmp_sr and out_sr * down == tmp_sr
        up_taps = cfg.filter_size * up if up > 1 and not is_torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not is_torgb else 1
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Padding w.r.t. the upsampled image so that the output has exactly out_size samples; the
        # "+ up" shifts to the symmetric (half-integer pixel centre) convention (docs/algorithm.md "Synthesis schedule").
        pad_total = (out_size - 1) * down + 1 - (in_size + k - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_ch = int(channels[idx])
        layers.append(LayerSpec(
            name=f"L{idx}_{out_size}_{out_ch}", in_channels=int(channels[prev]), out_channels=out_ch,
            in_size=in_size, out_size=out_size, in_sampling_rate=in_sr, out_sampling_rate=out_sr,
            tmp_sampling_rate=tmp_sr, in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
            up=up, down=down, up_taps=up_taps, down_taps=down_taps,
            radial_down=cfg.use_radial_filters and not is_crit,
            padding=(pad_lo, pad_hi, pad_lo, pad_hi), is_torgb=is_torgb, is_critically_sampled=is_crit,
            use_fp16=bool(out_sr * 2 ** cfg.num_fp16_res > res), kernel_size=k))
    return Schedule(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates,
                    half_widths=half_widths, sizes=sizes.astype(np.int64), channels=channels.astype(np.int64),
                    layers=tuple(layers))


# --------------------------------------------------------------------------------------------------
# Input layer (docs/algorithm.md "Input layer")

class SynthesisInput(nn.Module):
    """Fourier features: w [N, w_dim] -> [N, channels, size, size] float32.

    Buffers: `transform` [3,3] (user transform, stored as the *inverse* of the image-space
    transform; identity by default), `freqs` [C, 2], `phases` [C].
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float,
                 impl: str = "auto"):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        # Random frequencies, uniform over the disc of radius `bandwidth` (docs/algorithm.md "Input layer"; draw order
        # freqs, phases, weight, affine weight).
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25))
        freqs = freqs * bandwidth
        phases = torch.rand([channels]) - 0.5

        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0], impl=impl)
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        # Learned similarity transform from w (normalised by the rotation part's norm).
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        zero, one = torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 0])
        m_r = torch.stack([torch.stack([t[:, 0], -t[:, 1], zero], 1),
                           torch.stack([t[:, 1], t[:, 0], zero], 1),
                           torch.stack([zero, zero, one], 1)], 1)
        m_t = torch.stack([torch.stack([one, zero, -t[:, 2]], 1),
                           torch.stack([zero, one, -t[:, 3]], 1),
                           torch.stack([zero, zero, one], 1)], 1)
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)                       # [N, 3, 3]

        # Transform frequencies and phases: f' = f @ T[:2,:2], phase' = phase + f . T[:2, 2].
        freqs = self.freqs.unsqueeze(0)                                             # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]                                       # [N, C, 2]

        # Dampen frequencies pushed beyond the band limit by the user transform.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)     # [N, C]

        # Pixel centres in units where the central sampling_rate x sampling_rate pixels cover [-0.5, 0.5].
        coords = (torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5
                  - self.size / 2) / self.sampling_rate                             # [S]
        px = coords.view(1, 1, self.size, 1) * freqs[:, :, 0].view(n, 1, 1, -1)     # [N, 1, S(x), C]
        py = coords.view(1, self.size, 1, 1) * freqs[:, :, 1].view(n, 1, 1, -1)     # [N, S(y), 1, C]
        x = torch.sin((px + py + phases.view(n, 1, 1, -1)) * (2 * math.pi))         # [N, S, S, C]
        x = x * amplitudes.view(n, 1, 1, -1)

        weight = self.weight / math.sqrt(self.channels)
        x = x @ weight.t()
        return x.permute(0, 3, 1, 2)                                                # [N, C, S, S]

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


# --------------------------------------------------------------------------------------------------
# Synthesis layer (docs/algorithm.md "Synthesis layer"; the modulated convolution is an op: ops/modulated_conv.py)

class SynthesisLayer(nn.Module):
    """One alias-free layer L_i (or ToRGB): x [N, in, in_size, in_size] -> [N, out, out_size, out_size].

    Parameters: weight [out, in, k, k], bias [out], affine (w -> styles [in], bias init 1).
    Buffers: magnitude_ema [] (E[x^2] of the input), up_filter / down_filter (absent when identity).
    """

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: Optional[float], magnitude_ema_beta: float,
                 impl: str = "auto"):
        super().__init__()
        self.impl = check_impl(impl, type(self).__name__)
        self.w_dim = w_dim
        self.spec = spec
        self.is_torgb = spec.is_torgb
        self.in_channels = spec.in_channels
        self.out_channels = spec.out_channels
        self.in_size = spec.in_size
        self.out_size = spec.out_size
        self.up = spec.up
        self.down = spec.down
        self.padding = list(spec.padding)
        self.conv_kernel = spec.kernel_size
        self.use_fp16 = spec.use_fp16
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, self.in_channels, bias_init=1, impl=impl)
        self.weight = nn.Parameter(torch.randn([self.out_channels, self.in_channels,
                                                self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([self.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        up_f = design_lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, spec.tmp_sampling_rate)
        down_f = design_lowpass_filter(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                       spec.tmp_sampling_rate, radial=spec.radial_down)
        self.register_buffer("up_filter", filter_tensor(up_f))
        self.register_buffer("down_filter", filter_tensor(down_f))
        self.gain = 1.0 if self.is_torgb else math.sqrt(2)
        self.slope = 1.0 if self.is_torgb else 0.2
        self.torgb_weight_gain = 1 / math.sqrt(self.in_channels * self.conv_kernel ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False,
                force_fp32: bool = False) -> torch.Tensor:
        expected = [self.in_channels, self.in_size, self.in_size]
        if list(x.shape[1:]) != expected:
            raise ValueError(f"{self.spec.name}: expected input [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {list(x.shape)}")
        if update_emas:
            with torch.no_grad():
                magnitude_cur = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(magnitude_cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * self.torgb_weight_gain

        # fp16 where the ops run it (CUDA; docs/algorithm.md "Mixed precision"); styles, demodulation and EMA
        # statistics stay fp32.
        dtype = compute_dtype(x, self.use_fp16 and not force_fp32)
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain, impl=self.impl)
        x = filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
                           up=self.up, down=self.down, padding=self.padding, gain=self.gain,
                           slope=self.slope, clamp=self.conv_clamp, impl=self.impl)
        return x

    def extra_repr(self) -> str:
        s = self.spec
        return (f"w_dim={self.w_dim}, is_torgb={s.is_torgb}, critically_sampled={s.is_critically_sampled}, "
                f"use_fp16={s.use_fp16}, in={s.in_channels}x{s.in_size}^2 @ {s.in_sampling_rate:g}, "
                f"out={s.out_channels}x{s.out_size}^2 @ {s.out_sampling_rate:g}, up={s.up}, down={s.down}, "
                f"padding={list(s.padding)}")


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> img [N, img_channels, res, res] float32 (not clamped, roughly [-1, 1])."""

    def __init__(self, cfg: GeneratorConfig, impl: str = "auto"):
        super().__init__()
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.img_resolution
        self.img_channels = cfg.img_channels
        self.num_layers = cfg.num_layers
        self.num_ws = cfg.num_ws
        self.output_scale = cfg.output_scale
        sched = synthesis_schedule(cfg)
        self.schedule = sched
        self.input = SynthesisInput(cfg.w_dim, channels=int(sched.channels[0]), size=int(sched.sizes[0]),
                                    sampling_rate=float(sched.sampling_rates[0]), bandwidth=float(sched.cutoffs[0]),
                                    impl=impl)
        self.layer_names = []
        for spec in sched.layers:
            setattr(self, spec.name, SynthesisLayer(cfg.w_dim, spec, cfg.conv_clamp, cfg.magnitude_ema_beta,
                                                    impl=impl))
            self.layer_names.append(spec.name)

    def forward(self, ws: torch.Tensor, update_emas: bool = False, force_fp32: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, update_emas=update_emas, force_fp32=force_fp32)
        if self.output_scale != 1:
            x = x * self.output_scale
        # plain contiguous memory for the caller (the CPU path works channels-last inside)
        return x.to(torch.float32).contiguous()

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_layers={self.num_layers}")


class Generator(nn.Module):
    """StyleGAN3 generator: z [N, z_dim], c [N, c_dim] -> img [N, img_channels, res, res] float32.

    impl: the ops' backend for every layer ('auto' | 'ref' | 'cpu' | 'triton', docs/ops.md "Backends").
    """

    def __init__(self, cfg: GeneratorConfig, impl: str = "auto"):
        super().__init__()
        check_impl(impl, "Generator")
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.c_dim = cfg.c_dim
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.img_resolution
        self.img_channels = cfg.img_channels
        # Synthesis first: the official state_dict lists synthesis before mapping (docs/algorithm.md "Generator state_dict order").
        self.synthesis = SynthesisNetwork(cfg, impl=impl)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, num_layers=cfg.map_depth,
                                      lr_multiplier=cfg.mapping_lr_multiplier, w_avg_beta=cfg.w_avg_beta,
                                      impl=impl)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                force_fp32: bool = False) -> torch.Tensor:
        """force_fp32: run the fp16 layers in fp32 (metrics do this); no effect where they run fp32 anyway (CPU)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, force_fp32=force_fp32)


__all__ = ["MappingNetwork", "SynthesisInput", "SynthesisLayer", "SynthesisNetwork", "Generator",
           "synthesis_schedule", "LayerSpec", "Schedule"]
