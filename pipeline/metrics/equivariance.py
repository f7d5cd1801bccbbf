"""Equivariance metrics EQ-T, EQ-T_frac and EQ-R (docs/algorithm.md "Equivariance metrics"; Karras et al. 2021, §3 and Appendix E).

Each metric generates an image `orig` with the generator's input transform at identity, then the same latents
with the input transform set to a translation / rotation (docs/algorithm.md "Input layer": the buffer holds the *inverse* of the
image-space transform), and compares the result against `orig` transformed in pixel space. The score is the
PSNR in dB pooled over all samples (peak-to-peak 2 for images in [-1, 1]):

    MSE = Σ err / Σ mask,   PSNR = 20·log10(2) − 10·log10(MSE).

The generator is duck-typed: anything with `.z_dim`, `.c_dim`, `.img_resolution`, `.mapping(z, c, ...)`,
`.synthesis(ws)` and a `[3, 3]` buffer `.synthesis.input.transform` works.

Differences from the reference protocol, on purpose:
- Random numbers come from a local `torch.Generator(seed)` instead of the global RNG, so a run is reproducible.
- The transform is one `[3, 3]` buffer shared by the whole batch, so one translation / angle is drawn per batch
  (as in the reference, which uses batches of 4); a larger `batch_size` is faster but draws fewer transforms.
- Conditional generators get uniformly random one-hot labels unless a `c_sampler` is given (the reference
  draws from the dataset's label distribution, which needs the data).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from ops import filter2d, upsample2d

KINDS = ("eqt", "eqt_frac", "eqr")

# Lanczos parameters of the band-limited rotation (docs/algorithm.md "Equivariance metrics"): 3 lobes, 6 taps per side, 64-tap design grid.
_LANCZOS_A = 3
_AMAX = 6
_AFLT = 64
_ROTATE_UP = 4


def rotation_matrix(angle: float) -> np.ndarray:
    """R(α) of docs/algorithm.md "Input layer" as float64 [3, 3] (α in radians): `[[cos α, sin α, 0], [−sin α, cos α, 0], [0, 0, 1]]`."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def translation_matrix(tx: float, ty: float) -> np.ndarray:
    """Identity with translation `(tx, ty)` in the last column, float64 [3, 3]."""
    m = np.eye(3, dtype=np.float64)
    m[0, 2], m[1, 2] = tx, ty
    return m


def _lanczos_window(x: np.ndarray, a: int) -> np.ndarray:
    """L(x) = sinc(x / a) for |x| < a, else 0 (normalised sinc)."""
    return np.where(np.abs(x) < a, np.sinc(x / a), 0.0)


def _circular_conv2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Circular 2-D convolution of two arrays centred at index N//2 (odd N); result centred the same way."""
    fa = scipy.fft.rfft2(np.fft.ifftshift(a))
    fb = scipy.fft.rfft2(np.fft.ifftshift(b))
    return np.fft.fftshift(scipy.fft.irfft2(fa * fb, s=a.shape))


def design_lowpass_filter(matrix: np.ndarray, up: int, a: int = _LANCZOS_A, amax: int = _AMAX,
                          aflt: int = _AFLT) -> torch.Tensor:
    """Band-limiting filter for resampling through the linear map `matrix` (docs/algorithm.md "Equivariance metrics").

    The ideal response is the intersection of the input pixel grid's pass band and the output grid's pass band:
    `(sinc(xi)·sinc(yi)) ⊛ (sinc(xo)·sinc(yo))` with `(xo, yo) = A·(xi, yi)`, windowed by the same construction
    with Lanczos windows, evaluated on a `(2·aflt·up − 1)²` grid of spacing `1/up`, cropped to the central
    `2·amax·up − 1` taps, and with every one of the `up × up` polyphase components normalised to sum `1/up²`
    (so each output phase of an `up`-fold upsampling with gain `up²` has unit DC gain). Computed on the CPU in
    float64 (scipy's FFT handles the odd grid size several times faster than torch's on CPU).

    Args:
        matrix: [2, 2] (or [3, 3], only the linear part is used) float array, the map from input to output coords.
        up: oversampling factor (4 for `rotate`, 1 for `pseudo_rotate`).
    Returns:
        float32 [2·amax·up − 1, 2·amax·up − 1] CPU tensor, centred.
    """
    A = np.asarray(matrix, dtype=np.float64)[:2, :2]
    n = 2 * aflt * up - 1
    taps = (np.arange(n, dtype=np.float64) - (n // 2)) / up
    xi, yi = taps[None, :], taps[:, None]
    xo = A[0, 0] * xi + A[0, 1] * yi
    yo = A[1, 0] * xi + A[1, 1] * yi
    f = _circular_conv2d(np.sinc(yi) * np.sinc(xi), np.sinc(xo) * np.sinc(yo))
    w = _circular_conv2d(_lanczos_window(yi, a) * _lanczos_window(xi, a),
                         _lanczos_window(xo, a) * _lanczos_window(yo, a))
    keep = 2 * amax * up - 1
    start = n // 2 - keep // 2
    h = (f * w)[start:start + keep, start:start + keep]
    for py in range(up):
        for px in range(up):
            h[py::up, px::up] /= h[py::up, px::up].sum() * up * up
    return torch.from_numpy(h.astype(np.float32))


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Integer shift with zero fill: `out[..., y + dy, x + dx] = x[..., y, x]` (x [..., H, W])."""
    H, W = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dx) >= W or abs(dy) >= H:
        return out
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def _range_mask(n: int, lo: int, hi: int, device) -> torch.Tensor:
    """1-D float mask of length n, 1 on [lo, hi) ∩ [0, n)."""
    i = torch.arange(n, device=device)
    return ((i >= lo) & (i < hi)).to(torch.float32)


def translate_int(x: torch.Tensor, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EQ-T reference: `x` [N, C, H, W] shifted by whole pixels, and the mask [1, 1, H, W] of covered pixels."""
    H, W = x.shape[-2:]
    mx = _range_mask(W, dx, W + dx, x.device)
    my = _range_mask(H, dy, H + dy, x.device)
    return _shift(x, dx, dy), (my[:, None] * mx[None, :])[None, None]


def _lanczos3_taps(frac: float) -> list[tuple[int, float]]:
    """(k, weight) for k = −2 … 3: `sinc(k − f)·sinc((k − f)/3)`, normalised to sum 1 (docs/algorithm.md "Equivariance metrics")."""
    ks = np.arange(-2, 4)
    d = ks - frac
    w = np.sinc(d) * np.sinc(d / 3)
    w = w / w.sum()
    return list(zip(ks.tolist(), w.tolist()))


def translate_frac(x: torch.Tensor, tx: float, ty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EQ-T_frac reference: `x` [N, C, H, W] translated by `(tx, ty)` pixels with separable Lanczos-3.

    `out[x] = Σ_k w_k · in[x − ix − k]` with `ix = floor(tx)`, `w_k` from the fractional part (zero outside the
    image). The mask [1, 1, H, W] keeps `[max(ix + 3, 0), W + min(ix − 2, 0))` per axis, where all 6 taps fall
    inside the original image.
    """
    H, W = x.shape[-2:]
    ix, iy = math.floor(tx), math.floor(ty)
    out = sum(w * _shift(x, ix + k, 0) for k, w in _lanczos3_taps(tx - ix))
    out = sum(w * _shift(out, 0, iy + k) for k, w in _lanczos3_taps(ty - iy))
    mx = _range_mask(W, max(ix + 3, 0), W + min(ix - 2, 0), x.device)
    my = _range_mask(H, max(iy + 3, 0), H + min(iy - 2, 0), x.device)
    return out, (my[:, None] * mx[None, :])[None, None]


def rotate(x: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Band-limited rotation of `x` [N, C, H, W] by `angle` radians (docs/algorithm.md "Equivariance metrics"), and its mask [1, 1, H, W].

    4× upsampling through the band-limit filter of `R(α)` (so the bilinear resampling that follows works on a
    smooth, oversampled signal), then bilinear `grid_sample` with `R(α)⁻¹`. The upsampled canvas covers the
    image plus `p/4` pixels on each side and its content sits 1/8 pixel right/down of the input grid
    (`upsample2d`'s alignment), hence the `W/(W + 2p/4)` scale and the `1/(4W)` shift in normalised units.
    """
    N, C, H, W = x.shape
    up = _ROTATE_UP
    R = rotation_matrix(angle)
    f = design_lowpass_filter(R, up=up).to(x.device)
    p = f.shape[0] // 2
    y = upsample2d(x, f, up=up, padding=p)
    theta = np.linalg.inv(R)[:2].copy()
    theta[:, 2] *= 2  # translation in normalised [-1, 1] units (zero for a pure rotation)
    theta[0, 2] += 1 / (up * W)
    theta[1, 2] += 1 / (up * H)
    theta[0, :] *= W / (W + 2 * p / up)
    theta[1, :] *= H / (H + 2 * p / up)
    theta_t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)[None]
    grid = F.affine_grid(theta_t.expand(N, 2, 3), [N, C, H, W], align_corners=False)
    out = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = torch.zeros([1, 1, y.shape[2], y.shape[3]], dtype=x.dtype, device=x.device)
    b = 2 * p + 1  # samples whose filter support reaches the zero padding
    m[..., b:-b, b:-b] = 1
    mask = F.grid_sample(m, grid[:1], mode="nearest", padding_mode="zeros", align_corners=False)
    return out, mask


def pseudo_rotate(x: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the band limit a rotation by `angle` would apply, without rotating (docs/algorithm.md "Equivariance metrics").

    `x` [N, C, H, W] filtered in place (same size) with the 11×11 filter of `R(−α)`; mask [1, 1, H, W] drops
    the 5-pixel border the filter reads from the zero padding.
    """
    f = design_lowpass_filter(rotation_matrix(-angle), up=1).to(x.device)
    out = filter2d(x, f)
    b = f.shape[0] // 2
    H, W = x.shape[-2:]
    mask = torch.zeros([1, 1, H, W], dtype=x.dtype, device=x.device)
    mask[..., b:H - b, b:W - b] = 1
    return out, mask


def psnr_from_sums(sum_err: float, sum_mask: float) -> float:
    """Pooled PSNR in dB for images in [-1, 1] (peak-to-peak 2): `20·log10(2) − 10·log10(Σerr/Σmask)`."""
    if sum_mask <= 0:
        raise ValueError("equivariance: the masks covered no pixel; the image is too small for this metric")
    mse = sum_err / sum_mask
    if mse <= 0:
        return math.inf
    return 20 * math.log10(2) - 10 * math.log10(mse)


def default_labels(c_dim: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Uniformly random one-hot labels [n, c_dim] float32 (zeros [n, 0] if unconditional)."""
    c = torch.zeros([n, c_dim])
    if c_dim > 0:
        c[torch.arange(n), torch.randint(c_dim, [n], generator=gen)] = 1
    return c


def synthesis_kwargs(G) -> dict:
    """`{"force_fp32": True}` when `G.synthesis` accepts it (the metrics run in fp32, docs/algorithm.md "Equivariance metrics"), else {}."""
    try:
        params = inspect.signature(G.synthesis.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return {}
    return {"force_fp32": True} if "force_fp32" in params else {}


@torch.no_grad()
def eq_sums(G, kind: str, num_samples: int, batch_size: int = 4, seed: int = 0,
            device: Optional[torch.device] = None,
            c_sampler: Optional[Callable[[int, torch.Generator], torch.Tensor]] = None,
            progress: bool = False) -> tuple[float, float]:
    """Accumulate `(Σ err, Σ mask)` of one equivariance metric over `num_samples` generated images.

    The sums (float64 python floats) can be added across workers before `psnr_from_sums`, which makes the
    metric shardable: give each worker a different `seed` and a share of `num_samples`.

    Args:
        G: generator (see module docstring); evaluated in its current dtype/device, transform restored after.
        kind: 'eqt' (integer translation), 'eqt_frac' (fractional translation) or 'eqr' (rotation).
        num_samples: number of images (the reference uses 50,000).
        batch_size: images per generator call; one transform is drawn per batch.
        seed: seeds the local RNG for z, labels and transforms.
        c_sampler: `(n, generator) -> [n, c_dim] float32` labels; default random one-hot.
    """
    if kind not in KINDS:
        raise ValueError(f"equivariance: unknown metric {kind!r}; choose one of {', '.join(KINDS)}")
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"equivariance: num_samples ({num_samples}) and batch_size ({batch_size}) must be >= 1")
    try:
        transform = G.synthesis.input.transform
    except AttributeError as e:
        raise TypeError("equivariance: the generator has no `synthesis.input.transform` buffer "
                        "(only StyleGAN3-style generators with a Fourier-feature input can be measured)") from e
    if device is None:
        device = transform.device
    gen = torch.Generator().manual_seed(seed)
    sample_c = c_sampler or (lambda n, g: default_labels(G.c_dim, n, g))
    saved = transform.detach().clone()
    kwargs = synthesis_kwargs(G)
    res = int(G.img_resolution)
    sum_err, sum_mask = 0.0, 0.0
    batches = range(0, num_samples, batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=kind, unit="batch")
    try:
        for start in batches:
            n = min(batch_size, num_samples - start)
            z = torch.randn([n, G.z_dim], generator=gen).to(device)
            c = sample_c(n, gen).to(device)
            ws = G.mapping(z, c, truncation_psi=1)
            transform.copy_(torch.eye(3))
            orig = G.synthesis(ws, **kwargs).float()
            if kind in ("eqt", "eqt_frac"):
                t = (torch.rand(2, generator=gen, dtype=torch.float64) * 2 - 1) * 0.125
                if kind == "eqt":
                    t = torch.round(t * res) / res
                tx, ty = float(t[0]), float(t[1])
                transform.copy_(torch.as_tensor(translation_matrix(-tx, -ty)))
                img = G.synthesis(ws, **kwargs).float()
                if kind == "eqt":
                    ref, mask = translate_int(orig, round(tx * res), round(ty * res))
                else:
                    ref, mask = translate_frac(orig, tx * res, ty * res)
            else:
                angle = float((torch.rand([], generator=gen, dtype=torch.float64) * 2 - 1) * math.pi)
                transform.copy_(torch.as_tensor(rotation_matrix(-angle)))
                img = G.synthesis(ws, **kwargs).float()
                ref, m1 = rotate(orig, angle)
                img, m2 = pseudo_rotate(img, angle)
                mask = m1 * m2
            # Σ mask counts every channel of every sample, like Σ err (docs/algorithm.md "Equivariance metrics").
            sum_err += float(((ref - img).square() * mask).sum(dtype=torch.float64))
            sum_mask += float(mask.sum(dtype=torch.float64)) * n * orig.shape[1]
    finally:
        transform.copy_(saved)
    return sum_err, sum_mask


def compute_eq(G, kind: str = "eqt", num_samples: int = 50_000, batch_size: int = 4, seed: int = 0,
               device: Optional[torch.device] = None,
               c_sampler: Optional[Callable[[int, torch.Generator], torch.Tensor]] = None,
               progress: bool = False) -> float:
    """EQ-T / EQ-T_frac / EQ-R of `G` in dB (higher is more equivariant; `inf` if exact). See `eq_sums`."""
    return psnr_from_sums(*eq_sums(G, kind, num_samples, batch_size=batch_size, seed=seed, device=device,
                                   c_sampler=c_sampler, progress=progress))
