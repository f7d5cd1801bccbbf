"""Full training-state checkpoints and loading weights to start a new run from.

Layout of one checkpoint directory (what `ray.train.report(checkpoint=...)` persists under
`{storage}/{run_name}/checkpoint_{kimg:011.3f}kimg/`, e.g. checkpoint_0000001.200kimg):

    network.safetensors  G, D and G_ema weights + the network config (models.save_network; loadable by
                         models.load_network, i.e. by pipeline.generate / tracking / metrics)
    state.pt             everything else (torch.save, loadable with weights_only=True): both Adam
                         optimizers, cur_nimg, batch_idx, cur_tick, ADA state (p, pending sign sums), data
                         position (data pass), RNG states, the TrainConfig (to_dict) and `extra`
    fakes.png            grid of G_ema images for fixed latents (seed 0), uint8 RGB/L
    meta.json            human-readable summary: cur_nimg, kimg, tick and the metrics of that tick
    corrupt_samples.json the distinct corrupt samples found so far, [{"shard", "key", "reason"}] (also in
                         state.pt's `extra`, so the count survives a resume)

Ray Train registers a checkpoint only after every file of it is uploaded, and an automatic resume takes Ray's
latest registered checkpoint: a directory half-uploaded when storage went away is never the one a resume picks.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from pipeline.pixels import save_png, tile, to_uint8
from pipeline.model_sources import NETWORK_FILE, fetch_network

STATE_FILE = "state.pt"
GRID_FILE = "fakes.png"
META_FILE = "meta.json"
CORRUPT_FILE = "corrupt_samples.json"
GRID_SEED = 0  # latents of the fakes grid: the same images at every snapshot, so progress is comparable


def dir_name(cur_nimg: int) -> str:
    """Name of the checkpoint directory at `cur_nimg` images; sorts in training order."""
    return f"checkpoint_{cur_nimg / 1000:011.3f}kimg"


def staging_dir() -> str:
    """A fresh local directory to write one checkpoint into. Ray Train uploads it, in the background for the
    regular snapshots, and deletes it once uploaded (`report(..., delete_local_checkpoint_after_upload=True)`)."""
    return tempfile.mkdtemp(prefix="sg3-ckpt-")


def save(trainer, directory: str | os.PathLike) -> None:
    """Write network.safetensors, state.pt and fakes.png of `trainer` into `directory`."""
    d = Path(directory)
    models.save_network(d / NETWORK_FILE, G=trainer.G, D=trainer.D, G_ema=trainer.G_ema,
                        config=trainer.cfg.network,  # what the networks were built from (TrainConfig.resolved)
                        extra={"cur_nimg": trainer.cur_nimg, "kimg": trainer.cur_nimg / 1000})
    torch.save(trainer.state_dict(), d / STATE_FILE)
    save_grid(fakes_grid(trainer.G_ema, trainer.cfg.forward_batch), d / GRID_FILE)


def write_meta(directory: str | os.PathLike, metrics: dict[str, Any]) -> None:
    clean = {k: (v if isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))
                 else None) for k, v in metrics.items()}
    (Path(directory) / META_FILE).write_text(json.dumps(clean, indent=1, sort_keys=True))


def write_corrupt(directory: str | os.PathLike, samples: list[dict[str, str]]) -> None:
    """corrupt_samples.json: the run's distinct corrupt samples, [{"shard", "key", "reason"}] in the order found."""
    (Path(directory) / CORRUPT_FILE).write_text(json.dumps(samples, indent=1))


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The state.pt dict of a local checkpoint directory."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def restore(trainer, directory: str | os.PathLike) -> None:
    """Automatic resume: put a checkpoint's full state (weights, optimizers, counters, ADA p, RNG) back."""
    _copy_weights(trainer, Path(directory) / NETWORK_FILE, need_all=True)
    trainer.load_state_dict(load_state(directory))


def load_weights(trainer, source: str) -> None:
    """--resume SOURCE: start a NEW run from the weights of any network source of
    pipeline.model_sources.fetch_network (models:/NAME@ALIAS, a checkpoint directory, a .safetensors file,
    an official .pkl; local or s3://). Counters, optimizers and ADA p start fresh (docs/algorithm.md "Official training options")."""
    with tempfile.TemporaryDirectory(prefix="sg3-resume-") as tmp:
        _copy_weights(trainer, fetch_network(source, tmp), need_all=False)


def _copy_weights(trainer, path: Path, need_all: bool) -> None:
    net = models.load_network(str(path))
    pairs = [("G", trainer.G, net.G), ("D", trainer.D, net.D),
             ("G_ema", trainer.G_ema, net.G_ema if net.G_ema is not None else net.G)]
    for name, dst, src in pairs:
        if src is None:
            if need_all:
                raise ValueError(f"{path} holds no {name}; a training checkpoint needs G, D and G_ema")
            continue
        try:
            dst.load_state_dict(src.state_dict(), strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: its {name} does not match this run's architecture "
                             f"(--cfg/--cbase/--cmax/--map-depth/resolution must be the same): {e}") from None


@torch.no_grad()
def fakes_grid(G: torch.nn.Module, batch: int = 8, num: int | None = None, seed: int = GRID_SEED) -> np.ndarray:
    """Images of G for fixed latents, tiled: uint8 [rows·H, cols·W, C].

    num: images (default 32 below 128 px, else 16, 8 above 256 px); labels cycle through the classes.
    """
    res = G.img_resolution
    num = num or (32 if res < 128 else 16 if res <= 256 else 8)
    device = next(G.parameters()).device
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    c = torch.zeros([num, G.c_dim], device=device)
    if G.c_dim:
        c[torch.arange(num), torch.arange(num) % G.c_dim] = 1
    return tile(torch.cat([to_uint8(G(zz, cc)) for zz, cc in zip(z.split(batch), c.split(batch))]))


def save_grid(grid: np.ndarray, path: str | os.PathLike) -> None:
    save_png(grid[:, :, :3] if grid.shape[2] == 4 else grid, path)
