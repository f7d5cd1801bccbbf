"""StyleGAN2 residual discriminator with minibatch standard deviation and conditional projection
(docs/algorithm.md "Discriminator"). Names follow the official layout: `b{res}.fromrgb|conv0|conv1|skip`, `b4.conv|fc|out`,
`mapping.embed|fc0..fc7`. ``impl`` (the ops' backend, docs/ops.md "Backends") is given to the constructors and passed
down to every op call.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ops import check_impl, compute_dtype

from .config import DiscriminatorConfig
from .layers import RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer, normalize_2nd_moment


class ConditionMapping(nn.Module):
    """StyleGAN2 mapping network as D uses it (z_dim 0): c [N, c_dim] -> cmap [N, cmap_dim] float32.

    embed (FC c_dim -> cmap_dim, linear) + 2nd-moment normalisation, then `num_layers` lrelu FC layers
    with lr multiplier 0.01. No w_avg, no broadcast (docs/algorithm.md "Discriminator" step 5).
    """

    def __init__(self, c_dim: int, cmap_dim: int, num_layers: int = 8, lr_multiplier: float = 0.01,
                 impl: str = "auto"):
        super().__init__()
        self.c_dim = c_dim
        self.cmap_dim = cmap_dim
        self.num_layers = num_layers
        self.embed = FullyConnectedLayer(c_dim, cmap_dim, impl=impl)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(cmap_dim, cmap_dim, activation="lrelu",
                                                          lr_multiplier=lr_multiplier, impl=impl))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.embed(c.to(torch.float32)))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class DiscriminatorBlock(nn.Module):
    """Residual block at resolution r: [N, tmp, r, r] (or the image, first block) -> [N, out, r/2, r/2]."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, use_fp16: bool, conv_clamp: Optional[float], first_layer_idx: int = 0,
                 freeze_layers: int = 0, impl: str = "auto"):
        """first_layer_idx: how many conv layers the blocks before this one hold; layers whose index (in the
        order fromrgb, conv0, conv1, skip) is below `freeze_layers` are frozen (docs/algorithm.md "Discriminator")."""
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", RESAMPLE_FILTER.clone())
        self.num_layers = 0

        def trainable() -> bool:
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation="lrelu",
                                       conv_clamp=conv_clamp, trainable=trainable(), impl=impl)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation="lrelu", conv_clamp=conv_clamp,
                                 trainable=trainable(), impl=impl)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation="lrelu", down=2,
                                 conv_clamp=conv_clamp, trainable=trainable(), impl=impl)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2, trainable=trainable(),
                                impl=impl)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        dtype = compute_dtype(img, self.use_fp16 and not force_fp32)  # fp16 where the ops run it (CUDA)
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype))
        else:
            x = x.to(dtype)
        # Residual with both branches scaled by sqrt(0.5) to keep unit variance (docs/algorithm.md "Discriminator").
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}"


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append minibatch-std features (docs/algorithm.md "Discriminator" step 1): [N, C, H, W] -> [N, C + num_channels, H, W].

    Groups are *strided*: with G = min(group_size, N), sample n belongs to group n mod (N/G).
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g != 0:
        raise ValueError(f"minibatch-std: batch size {n} is not divisible by the group size {g} "
                         f"(mbstd_group_size={group_size}); use a batch per worker that is a multiple of it")
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w)          # [G, N/G, F, c, H, W]; sample n -> (n // (N/G), n % (N/G))
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])                       # [N/G, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)   # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head (always fp32): minibatch std, conv, fc, out (+ conditional projection) -> [N, 1]."""

    def __init__(self, in_channels: int, cmap_dim: int, mbstd_group_size: int, mbstd_num_channels: int,
                 conv_clamp: Optional[float], impl: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation="lrelu",
                                conv_clamp=conv_clamp, impl=impl)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu", impl=impl)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim, impl=impl)

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]) -> torch.Tensor:
        x = x.to(torch.float32)
        x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """img [N, img_channels, res, res] float32 (in ~[-1, 1]), c [N, c_dim] -> logits [N, 1] float32.

    impl: the ops' backend for every layer ('auto' | 'ref' | 'cpu' | 'triton', docs/ops.md "Backends").
    """

    def __init__(self, cfg: DiscriminatorConfig, impl: str = "auto"):
        super().__init__()
        check_impl(impl, "Discriminator")
        self.cfg = cfg
        self.c_dim = cfg.c_dim
        self.img_resolution = cfg.img_resolution
        self.img_channels = cfg.img_channels
        log2 = int(np.log2(cfg.img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]

        def ch(res: int) -> int:
            return min(cfg.channel_base // res, cfg.channel_max)

        cmap_dim = ch(4) if cfg.cmap_dim is None else cfg.cmap_dim
        if cfg.c_dim == 0:
            cmap_dim = 0
        fp16_resolution = max(2 ** (log2 + 1 - cfg.num_fp16_res), 8)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = ch(res) if res < cfg.img_resolution else 0
            block = DiscriminatorBlock(in_channels, ch(res), ch(res // 2), res, cfg.img_channels,
                                       use_fp16=res >= fp16_resolution, conv_clamp=cfg.conv_clamp,
                                       first_layer_idx=cur_layer_idx, freeze_layers=cfg.freeze_layers, impl=impl)
            cur_layer_idx += block.num_layers
            setattr(self, f"b{res}", block)
        if cfg.c_dim > 0:
            self.mapping = ConditionMapping(cfg.c_dim, cmap_dim, num_layers=cfg.mapping_layers, impl=impl)
        self.b4 = DiscriminatorEpilogue(ch(4), cmap_dim, cfg.mbstd_group_size, cfg.mbstd_num_channels,
                                        conv_clamp=cfg.conv_clamp, impl=impl)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, update_emas: bool = False,
                force_fp32: bool = False) -> torch.Tensor:
        """update_emas is accepted for symmetry with G and ignored (D has no EMA statistics)."""
        expected = [self.img_channels, self.img_resolution, self.img_resolution]
        if img.ndim != 4 or list(img.shape[1:]) != expected:
            raise ValueError(f"D expects images [N, {expected[0]}, {expected[1]}, {expected[2]}], got {list(img.shape)}")
        cmap = None
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[0] != img.shape[0] or c.shape[1] != self.c_dim:
                got = None if c is None else list(c.shape)
                raise ValueError(f"c must have shape [{img.shape[0]}, {self.c_dim}], got {got}")
            cmap = self.mapping(c)
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        return self.b4(x, cmap)


__all__ = ["Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "ConditionMapping", "minibatch_std"]
