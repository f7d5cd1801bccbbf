"""Sliced Wasserstein distance between image sets over Laplacian-pyramid patches (ProGAN, Karras et al. 2018, §5).

Per pyramid level (full resolution, then halving down to `min_res`; the last level is the Gaussian residual):
1. take `descriptors_per_image` random 7×7 patches of every image's Laplacian level (descriptor [C·49]),
2. normalise each set per channel (mean 0, std 1 over all its descriptors and patch pixels),
3. project both sets on `dirs_per_repeat` random unit directions, sort each projection, and average the absolute
   difference of the sorted values (the 1-D Wasserstein-1 distance between the projected distributions);
   repeat `dir_repeats` times with fresh directions and average.

Values are reported ×1e3, as ProGAN's tables do; `compute_swd` returns the mean over levels. Lower is better; a set
against an independent draw of itself is ≈ 0 (sampling noise only).

The pyramid uses the 5-tap binomial filter [1, 4, 6, 4, 1]/16 with zero padding, through `ops.upfirdn2d`.
"""

from __future__ import annotations

from typing import Optional

import torch

from ops import upfirdn2d
from pipeline.metrics.batches import ImageSource, iter_batches

_PYR_FILTER = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
PATCH = 7
MAX_DESCRIPTORS = 1 << 18  # per level and set: 2^18 × 147 float32 ≈ 154 MB

def pyramid_resolutions(resolution: int, min_res: int = 16) -> list[int]:
    """Level resolutions, e.g. 64 -> [64, 32, 16]; a single level when the image is below `min_res`."""
    levels = [resolution]
    while levels[-1] // 2 >= min_res and levels[-1] % 2 == 0:
        levels.append(levels[-1] // 2)
    return levels


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of `x` [N, C, H, W] float32: `num_levels` tensors, full resolution first.

    Level i = G_i − up(G_{i+1}) with G_0 = x and G_{i+1} = down(G_i); the last level is G_last itself.
    """
    f = _PYR_FILTER.to(x.device)
    gauss = [x]
    for _ in range(num_levels - 1):
        # Output sample i is centred on input sample 2i: symmetric padding of 2 for the 5-tap filter.
        gauss.append(upfirdn2d(gauss[-1], f, down=2, padding=2))
    levels = [g - upfirdn2d(g_next, f, up=2, padding=2, gain=4) for g, g_next in zip(gauss[:-1], gauss[1:])]
    return levels + [gauss[-1]]


def _random_patches(x: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` random 7×7 patches per image of `x` [N, C, H, W] -> [N·count, C, 7, 7]."""
    N, C, H, W = x.shape
    # One draw of [N, count, 2] consumes the generator image by image, so the positions of image i do not depend
    # on how the set was split into batches.
    pos = torch.randint(min(H, W) - PATCH + 1, [N, count, 2], generator=gen).to(x.device)
    ys, xs = pos[..., 0], pos[..., 1]
    d = torch.arange(PATCH, device=x.device)
    n = torch.arange(N, device=x.device)[:, None, None, None]
    rows = (ys[:, :, None, None] + d[None, None, :, None])  # [N, count, 7, 1]
    cols = (xs[:, :, None, None] + d[None, None, None, :])  # [N, count, 1, 7]
    patches = x.permute(0, 2, 3, 1)[n, rows, cols]  # [N, count, 7, 7, C]
    return patches.reshape(N * count, PATCH, PATCH, C).permute(0, 3, 1, 2)


def collect_descriptors(images: ImageSource, descriptors_per_image: int = 128, min_res: int = 16,
                        max_images: Optional[int] = None, seed: int = 0) -> dict[int, torch.Tensor]:
    """Per-level patch descriptors of a set of uint8 images: level resolution (px, largest first) ->
    [num_images·per_image, C, 7, 7] float32.

    `images`: uint8 [N, C, H, W] tensor or an iterable of such batches (e.g. a data reader); `max_images` stops
    reading after that many images (None = all).
    """
    gens: list[torch.Generator] = []  # one per level, so positions do not depend on the batching
    per_level: Optional[list[list[torch.Tensor]]] = None
    resolutions: list[int] = []
    shape = None
    for batch in iter_batches(images, max_images, uint8_for="swd"):
        if shape is None:
            shape = tuple(batch.shape[1:])
            if min(shape[1:]) < PATCH:
                raise ValueError(f"swd: images of {shape[1]}x{shape[2]} px are smaller than the "
                                 f"{PATCH}x{PATCH} patches")
            resolutions = pyramid_resolutions(min(shape[1:]), min_res)
            per_level = [[] for _ in resolutions]
            gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(resolutions))]
        elif tuple(batch.shape[1:]) != shape:
            raise ValueError(f"swd: image shape changed within a set: {list(shape)} then {list(batch.shape[1:])}")
        levels = laplacian_pyramid(batch.float(), len(per_level))
        for acc, level, gen in zip(per_level, levels, gens):
            acc.append(_random_patches(level, descriptors_per_image, gen).cpu())
    if per_level is None:
        raise ValueError("swd: the image set is empty")
    return {r: torch.cat(acc) for r, acc in zip(resolutions, per_level)}


def _normalize(desc: torch.Tensor) -> torch.Tensor:
    """Per-channel standardisation over all descriptors and patch pixels; flattened to [D, C·49]."""
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dirs_per_repeat: int = 512, dir_repeats: int = 4,
                       gen: Optional[torch.Generator] = None, chunk: int = 128) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between projections of `a`, `b`.

    a, b: [D, dim] float32 with the same D (equal sizes make sorted projections comparable element-wise).
    """
    if a.shape != b.shape:
        raise ValueError(f"swd: descriptor sets differ in shape {list(a.shape)} vs {list(b.shape)}")
    gen = gen or torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    for _ in range(dir_repeats):
        dirs = torch.randn([a.shape[1], dirs_per_repeat], generator=gen)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        for d in dirs.split(chunk, dim=1):  # bounds the [chunk, D] projections' memory
            # Sorting along the contiguous last axis is several times faster than along the first.
            pa = torch.sort((d.T @ a.T).contiguous(), dim=1).values
            pb = torch.sort((d.T @ b.T).contiguous(), dim=1).values
            total += float((pa - pb).abs().mean(dim=1).sum(dtype=torch.float64))
            count += d.shape[1]
    return total / count


def swd_levels(real: ImageSource, fake: ImageSource, descriptors_per_image: int = 128, dirs_per_repeat: int = 512,
               dir_repeats: int = 4, min_res: int = 16, max_images: Optional[int] = None,
               max_descriptors: int = MAX_DESCRIPTORS, seed: int = 0) -> dict[int, float]:
    """SWD ×1e3 per pyramid level, keyed by the level's resolution in pixels (largest first).

    real, fake: uint8 [N, C, H, W] tensors or iterables of batches, same C/H/W. When the sets differ in size the
    larger set's descriptors are randomly subsampled to the smaller count. `max_descriptors` bounds memory: when
    the number of images is known (tensors, or `max_images`), fewer patches per image are taken so that a level
    holds at most that many descriptors per set (ProGAN's 16,384 images × 128 would need ~1.2 GB per level).
    """
    sizes = [min(len(x), max_images or len(x)) if isinstance(x, torch.Tensor) else max_images for x in (real, fake)]
    if all(n is not None for n in sizes):
        descriptors_per_image = max(1, min(descriptors_per_image, max_descriptors // max(max(sizes), 1)))
    da = collect_descriptors(real, descriptors_per_image, min_res, max_images, seed=seed)
    # Same seed: both sets are probed at the same patch positions, so identical sets give exactly 0.
    db = collect_descriptors(fake, descriptors_per_image, min_res, max_images, seed=seed)
    return swd_from_descriptors(da, db, dirs_per_repeat, dir_repeats, seed)


def swd_from_descriptors(da: dict[int, torch.Tensor], db: dict[int, torch.Tensor], dirs_per_repeat: int = 512,
                         dir_repeats: int = 4, seed: int = 0) -> dict[int, float]:
    """SWD ×1e3 per level between two `collect_descriptors` results (taken with the same seed). The real side
    can be collected once and compared with many generated sets (the training loop's quality curve)."""
    ca, cb = next(iter(da.values())).shape[1], next(iter(db.values())).shape[1]
    if list(da) != list(db) or ca != cb:
        raise ValueError(f"swd: real and generated images differ in shape: {ca} vs {cb} channels, pyramid "
                         f"levels {list(da)} vs {list(db)} px")
    gen = torch.Generator().manual_seed(seed + 2)
    out = {}
    for res in da:
        a, b = da[res], db[res]
        n = min(len(a), len(b))
        a = a[torch.randperm(len(a), generator=gen)[:n]] if len(a) > n else a
        b = b[torch.randperm(len(b), generator=gen)[:n]] if len(b) > n else b
        out[res] = sliced_wasserstein(_normalize(a), _normalize(b), dirs_per_repeat, dir_repeats, gen) * 1e3
    return out


def compute_swd(real: ImageSource, fake: ImageSource, **kwargs) -> float:
    """Mean over pyramid levels of `swd_levels` (×1e3). kwargs as `swd_levels`."""
    levels = swd_levels(real, fake, **kwargs)
    return sum(levels.values()) / len(levels)
