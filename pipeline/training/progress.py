"""Quality over time, on by default (`--quality 1`): a cheap SWD at every snapshot and progress.png.

- `QualityProbe`: SWD ×1e3 (pipeline.metrics.swd, the same pyramid/patch/projection code as `--metrics swd`)
  between G_ema's images for fixed latents and a fixed subset of the reals: the first `num_images` images of
  the set in shard order, read once per run by rank 0 without Ray Data, their patch descriptors kept in memory
  and cached on disk per data set (keyed by the manifest's sha256 and the probe's settings). Values are
  comparable within a run and between runs on the same set; not with `--metrics swd` (other image counts).
- `History`: per tick the losses, per snapshot the metric, against kimg; kept in the checkpoints
  (`trainer.extra["progress"]`), so a resumed run draws its whole curve.
- `render(history, grid)`: progress.png — the metric and the losses against kimg, and the latest fakes grid.
  Rank 0 writes it at every snapshot into the checkpoint and into the run directory, beside the checkpoints
  (local or s3), with its data as progress.json.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import storage
from pipeline.data.image_codec import decode_png_into
import pipeline.metrics.core as metrics_core
from pipeline.metrics.swd import collect_descriptors, swd_from_descriptors

QUALITY_KEY = "quality/swd"  # the reported metric (MLflow: quality.swd), ×1e3, lower is better
PROGRESS_FILE = "progress.png"
HISTORY_FILE = "progress.json"  # progress.png's data: [{"kimg", "loss/…", "quality/swd"}, …]
# Probe settings, measured on the embedded default (32x32, 2-core CPU, docs/training.md): ~2 s per snapshot, almost
# all of it generating the 64 fakes; an untrained G scores ~420, two disjoint 64-image subsets of the reals ~115
# (the floor at this image count), and 128 images or more patches or projections move these by less than 5.
NUM_IMAGES = 64  # reals and fakes per measurement
DESCRIPTORS_PER_IMAGE = 32  # 7x7 patches per image and pyramid level
DIRS_PER_REPEAT, DIR_REPEATS = 128, 4  # random projections
GEN_BATCH = 8  # images per generator call
SEED = 0  # patch positions, projections and the fakes' latents: the same at every snapshot


def _shard_stream(uri: str):
    """A readable binary stream of one shard (local path, file:// or s3://)."""
    if storage.is_s3(uri):
        fs, path = storage.pyarrow_fs(uri)
        return fs.open_input_stream(path)
    return open(storage.parse(uri).path, "rb")


def first_images(info, num: int) -> torch.Tensor:
    """The first `num` decodable images of a shard set in shard order, uint8 [n, C, H, W] (n ≤ num).
    Reads the shards as plain tar streams (no Ray); a corrupt PNG is passed over."""
    res, ch = info.resolution, info.channels
    out: list[np.ndarray] = []
    for shard in info.shard_uris():
        with _shard_stream(shard) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if not member.name.endswith(".png"):
                    continue
                hwc = np.empty((res, res, ch), dtype=np.uint8)
                try:
                    decode_png_into(tar.extractfile(member).read(), hwc)
                except Exception:  # noqa: BLE001 - a damaged sample is the data reader's business, not ours
                    continue
                out.append(hwc)
                if len(out) >= num:
                    break
        if len(out) >= num:
            break
    if not out:
        raise ValueError(f"{info.uri}: no readable image for the quality probe")
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).copy())


class QualityProbe:
    """SWD of a generator against a fixed subset of a data set's reals (see the module docstring).

    info: the set's DatasetInfo. labels: (values [K, c_dim], counts [K]) for conditional generators (fake labels
    drawn with the set's frequencies), else None. cache_dir: where real descriptors are cached (None = no cache).
    """

    def __init__(self, info, num_images: int = NUM_IMAGES, labels=None, cache_dir: str | os.PathLike | None = None):
        self.info, self.num_images, self.labels = info, num_images, labels
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._real: dict[int, torch.Tensor] | None = None

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = f"{self.info.manifest_sha256}/{self.num_images}/{DESCRIPTORS_PER_IMAGE}/{SEED}/v1"
        return self.cache_dir / f"quality-swd-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"

    def real_descriptors(self) -> dict[int, torch.Tensor]:
        """Per pyramid level, the reals' patch descriptors: from memory, the disk cache, or the shards (once)."""
        if self._real is not None:
            return self._real
        path = self._cache_path()
        if path is not None and path.exists():
            try:
                self._real = {int(k): v.float() for k, v in torch.load(path, weights_only=True).items()}
                return self._real
            except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
                pass
        reals = first_images(self.info, self.num_images)
        self.num_images = len(reals)  # a set smaller than the probe: compare as many fakes
        self._real = collect_descriptors(reals, DESCRIPTORS_PER_IMAGE, seed=SEED)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({k: v.half() for k, v in self._real.items()}, tmp)  # half: the cache is small
            os.replace(tmp, path)  # atomic: concurrent runs on one machine never read half a file
            self._real = {k: v.half().float() for k, v in self._real.items()}  # the same values as a cache hit
        return self._real

    @torch.no_grad()
    def measure(self, G: torch.nn.Module) -> float:
        """SWD ×1e3 (mean over levels) between G's images for fixed latents and the reals; lower is better."""
        real = self.real_descriptors()
        sampler = None
        if self.labels is not None and G.c_dim:
            values = torch.as_tensor(self.labels[0], dtype=torch.float32)
            probs = torch.as_tensor(self.labels[1], dtype=torch.float64)
            sampler = lambda n, gen: values[torch.multinomial(probs, n, replacement=True, generator=gen)]  # noqa: E731
        fakes = metrics_core.generate_images(G, self.num_images, batch_size=GEN_BATCH, seed=SEED, c_sampler=sampler)
        fake = collect_descriptors(fakes, DESCRIPTORS_PER_IMAGE, seed=SEED)
        levels = swd_from_descriptors(real, fake, DIRS_PER_REPEAT, DIR_REPEATS, seed=SEED)
        return sum(levels.values()) / len(levels)


# --------------------------------------------------------------------------------------------------

LOSS_KEYS = ("loss/G_loss", "loss/D_loss", "loss/r1_penalty")


class History:
    """The run's curve: rows {"kimg", losses…, QUALITY_KEY?}, one per tick. Plain lists of floats, so that it
    travels in a checkpoint's `extra` (torch.load weights_only)."""

    def __init__(self, rows: list[dict[str, float]] | None = None):
        self.rows = [dict(r) for r in rows or []]

    def add(self, metrics: dict[str, Any]) -> None:
        row = {k: float(metrics[k]) for k in ("kimg", *LOSS_KEYS, QUALITY_KEY)
               if k in metrics and math.isfinite(float(metrics[k]))}  # NaN: a phase that did not run this tick
        self.rows = [r for r in self.rows if r["kimg"] < row["kimg"]] + [row]  # a resumed run replaces its future

    def quality(self) -> list[tuple[float, float]]:
        """(kimg, metric) of every snapshot that measured it."""
        return [(r["kimg"], r[QUALITY_KEY]) for r in self.rows if QUALITY_KEY in r]


def render(history: History, grid: np.ndarray | None) -> bytes:
    """progress.png's bytes: the quality metric (top left) and the losses (bottom left) against kimg, and the
    latest fakes grid (right). grid: uint8 [H, W, C] or None."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 5), dpi=100)
    ax_q = fig.add_axes([0.07, 0.57, 0.4, 0.36])
    ax_l = fig.add_axes([0.07, 0.1, 0.4, 0.36], sharex=ax_q)
    q = history.quality()
    if q:
        ax_q.plot([k for k, _ in q], [v for _, v in q], "o-", color="tab:purple")
        ax_q.set_title(f"quality: SWD x1e3 on fixed reals (lower is better), last {q[-1][1]:.1f}", fontsize=9)
    else:
        ax_q.set_title("quality: not measured (--quality 0)", fontsize=9)
    for key, color in zip(LOSS_KEYS, ("tab:blue", "tab:red", "tab:gray")):
        pts = [(r["kimg"], r[key]) for r in history.rows if key in r and math.isfinite(r[key])]
        if pts:
            ax_l.plot([k for k, _ in pts], [v for _, v in pts], ".-", color=color, label=key.split("/", 1)[1])
    ax_l.set_xlabel("kimg")
    ax_l.set_title("losses per tick", fontsize=9)
    ax_l.legend(fontsize=8, loc="best")
    for ax in (ax_q, ax_l):
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    ax_g = fig.add_axes([0.52, 0.05, 0.46, 0.88])
    ax_g.axis("off")
    if grid is not None:
        ax_g.imshow(grid[:, :, 0] if grid.shape[2] == 1 else grid[:, :, :3], cmap="gray" if grid.shape[2] == 1
                    else None, interpolation="nearest")
        kimg = history.rows[-1]["kimg"] if history.rows else 0.0
        ax_g.set_title(f"G_ema, fixed latents, {kimg:g} kimg", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

