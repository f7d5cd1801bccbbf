"""Mean power spectra of image sets and the plot that compares them (the aliasing picture of Karras et al. 2021).

A generator that aliases leaves energy where the training images have none: bright lines or a grid of peaks at
high frequencies of the generated set's spectrum. `mean_power_spectrum` averages `|FFT|²` over images and
channels after removing each image's mean and applying a separable Kaiser window (to keep the image border's
discontinuity from smearing energy over all frequencies); `save_spectrum_plot` draws the 2-D spectra in dB side
by side plus their radially averaged profiles.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch

from pipeline.metrics.batches import ImageSource, iter_batches

def mean_power_spectrum(images: ImageSource, pad: int = 2, beta: float = 8.0,
                        max_images: Optional[int] = None) -> np.ndarray:
    """Mean power spectrum of images, float64 [pad·H, pad·W], zero frequency at the centre (fftshifted).

    images: uint8 [N, C, H, W] (mapped to [-1, 1]) or float [N, C, H, W] in [-1, 1]; a tensor or iterable of
    batches. pad: zero-padding factor (finer frequency sampling). beta: Kaiser window shape. Units: power per
    pixel of the window-normalised signal, so a flat (white) spectrum with variance v reads v everywhere.
    """
    total, count = None, 0
    for x in iter_batches(images, max_images):
        x = x.to(torch.float64) / 127.5 - 1 if x.dtype == torch.uint8 else x.to(torch.float64)
        total_batch, n = _batch_power(x, pad, beta)
        total = total_batch if total is None else total + total_batch
        count += n
    if total is None:
        raise ValueError("spectrum: the image set is empty")
    return np.fft.fftshift(total / count)


def _batch_power(x: torch.Tensor, pad: int, beta: float) -> tuple[np.ndarray, int]:
    """Sum over images and channels of the windowed power spectrum of `x` [N, C, H, W] float64 in [-1, 1]."""
    N, C, H, W = x.shape
    x = x - x.mean(dim=(2, 3), keepdim=True)
    w = torch.from_numpy(np.outer(np.kaiser(H, beta), np.kaiser(W, beta)))
    w = w / w.square().mean().sqrt()  # unit mean-square window: white noise keeps its variance
    spec = torch.fft.fft2(x * w, s=(pad * H, pad * W)).abs().square() / (H * W)
    return spec.sum(dim=(0, 1)).numpy(), N * C


def radial_profile(spectrum: np.ndarray, num_bins: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power of a centred spectrum [h, w]: (frequency in cycles/pixel [B], mean power [B]).

    Frequencies run from 0 to the corner (√2·0.5 cycles/pixel); Nyquist of the axes is 0.5.
    """
    h, w = spectrum.shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    r = np.sqrt(fx ** 2 + fy ** 2).ravel()
    num_bins = num_bins or max(h, w) // 2
    edges = np.linspace(0, r.max() + 1e-9, num_bins + 1)
    idx = np.clip(np.digitize(r, edges) - 1, 0, num_bins - 1)
    sums = np.bincount(idx, weights=spectrum.ravel(), minlength=num_bins)
    counts = np.maximum(np.bincount(idx, minlength=num_bins), 1)
    return (edges[:-1] + edges[1:]) / 2, sums / counts


def save_spectrum_plot(spectra: dict[str, np.ndarray], path: Union[str, os.PathLike],
                       title: Optional[str] = None) -> str:
    """Write a PNG: one dB heat map per named spectrum (shared colour scale) and their radial profiles.

    spectra: name -> centred spectrum (e.g. {"generated": ..., "real": ...}). Returns the path written.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(spectra)
    db = {k: 10 * np.log10(np.maximum(v, 1e-12)) for k, v in spectra.items()}
    vmax = max(float(v.max()) for v in db.values())
    vmin = vmax - 80
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        h, w = db[name].shape
        im = ax.imshow(db[name], cmap="inferno", vmin=vmin, vmax=vmax, extent=(-0.5, 0.5, 0.5, -0.5))
        ax.set_title(f"{name} ({h}x{w})")
        ax.set_xlabel("cycles/pixel")
    fig.colorbar(im, ax=axes[0, :len(names)].tolist(), label="power (dB)", shrink=0.8)
    prof = axes[0, -1]
    for name in names:
        f, p = radial_profile(spectra[name])
        prof.semilogy(f, p, label=name)
    prof.axvline(0.5, color="gray", linestyle=":", linewidth=1)
    prof.set_xlabel("radial frequency (cycles/pixel)")
    prof.set_title("radial profile")
    prof.legend()
    if title:
        fig.suptitle(title)
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
