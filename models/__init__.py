"""StyleGAN3 networks (configs T and R) and the StyleGAN2 discriminator.

Public API:
    build(preset, resolution, batch_size=32, device=None, impl='auto', **overrides) -> (G, D)
    build_from_config(NetworkConfig, device=None, impl='auto') -> (G, D)
    set_input_transform(G, tx=0., ty=0., angle=0.)
    save_network(path, G=..., D=None, G_ema=None, config=..., extra=None)
    load_network(path_or_bytes) -> Network(G, D, G_ema, config, extra, source)
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .config import (DEFAULT_BATCH_SIZE, PRESETS, DiscriminatorConfig, GeneratorConfig, NetworkConfig,
                     build_config, magnitude_ema_beta_for_batch)
from .discriminator import Discriminator
from .generator import Generator, synthesis_schedule
from .network_io import Network, load_network, network_to_bytes, save_network


def build_from_config(config: NetworkConfig, device: Union[str, torch.device, None] = None, impl: str = "auto"):
    """Construct (G, D) for a NetworkConfig. device: where parameters are created (e.g. "meta" for
    shape-only networks; filter buffers are designed on the CPU and moved there). impl: the ops' backend that
    every layer passes to the ops ('auto' | 'ref' | 'cpu' | 'triton', docs/ops.md "Backends")."""
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            G, D = Generator(config.G, impl=impl), Discriminator(config.D, impl=impl)
    else:
        G, D = Generator(config.G, impl=impl), Discriminator(config.D, impl=impl)
        if device is not None:
            G, D = G.to(device), D.to(device)
    # The whole description (with the preset name) travels with the modules, so that
    # save_network(G=..., D=...) without an explicit config records it.
    G.network_config = D.network_config = config
    return G, D


def build(preset: str, resolution: int, batch_size: int = DEFAULT_BATCH_SIZE,
          device: Union[str, torch.device, None] = None, impl: str = "auto", **overrides):
    """Build (G, D) for `preset` ("stylegan3-t" | "stylegan3-r") at `resolution`, as train.py does.

    overrides: channel_base, channel_max (before R's doubling, like --cbase/--cmax), map_depth, c_dim,
    img_channels, z_dim, w_dim, conv_clamp, num_fp16_res, magnitude_ema_beta, mbstd_group_size, fp32, ...
    (see models.config.build_config). G.cfg / D.cfg hold the per-network configs, G.network_config / D.network_config the whole NetworkConfig.
    """
    return build_from_config(build_config(preset, resolution, batch_size=batch_size, **overrides), device=device,
                             impl=impl)


def set_input_transform(G: torch.nn.Module, tx: float = 0.0, ty: float = 0.0, angle: float = 0.0) -> None:
    """Translate the generated image by (tx, ty) and rotate it by `angle` (radians), docs/algorithm.md "Input layer".

    tx, ty are in units of the image side (1.0 = the whole output width; a shift of k pixels is
    k / img_resolution). The buffer holds the *inverse* of the image-space transform
    m = [[cos a, sin a, tx], [-sin a, cos a, ty], [0, 0, 1]]. Works on G or G.synthesis.
    """
    synthesis = getattr(G, "synthesis", G)
    buf = synthesis.input.transform
    m = np.array([[math.cos(angle), math.sin(angle), tx],
                  [-math.sin(angle), math.cos(angle), ty],
                  [0.0, 0.0, 1.0]], dtype=np.float64)
    buf.copy_(torch.as_tensor(np.linalg.inv(m), dtype=buf.dtype, device=buf.device))


__all__ = ["build", "build_from_config", "build_config", "set_input_transform", "save_network", "load_network",
           "network_to_bytes", "Network", "Generator", "Discriminator", "GeneratorConfig", "DiscriminatorConfig",
           "NetworkConfig", "PRESETS", "DEFAULT_BATCH_SIZE", "magnitude_ema_beta_for_batch", "synthesis_schedule"]
