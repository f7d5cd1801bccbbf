"""Shared cases and an independent float64 construction of filtered_lrelu (spec §c.3) for the kernel tests.

The construction follows the definition literally: bias, explicit zero-insertion, pad/crop, true convolution
with the (flipped) filter per channel via conv2d, leaky ReLU · gain, clamp, convolution with fd, then every
`down`-th sample. It is deliberately the slow, obvious form.
"""
from __future__ import annotations

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F


def firwin(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """Separable Kaiser low-pass, spec §b.5 -> [numtaps] float32."""
    return torch.tensor(scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), dtype=torch.float32)


def jinc(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor:
    """Radial jinc·Kaiser low-pass, spec §b.5 -> [numtaps, numtaps] float32."""
    u = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(u, u))
    f = scipy.special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f = f * np.outer(w, w)
    return torch.tensor(f / f.sum(), dtype=torch.float32)


def _conv_valid(x: torch.Tensor, f: torch.Tensor | None, flip_filter: bool) -> torch.Tensor:
    """Per-channel 'valid' true convolution (correlation if flip_filter) with a 1-D (separable) or 2-D filter."""
    if f is None:
        return x
    c = x.shape[1]
    f = f.to(torch.float64)
    if f.ndim == 1:
        k = f if flip_filter else f.flip(0)
        x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    k = f if flip_filter else f.flip([0, 1])
    return F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)


def pre_activation(x, fu, b, up, padding, flip_filter):
    """Steps 1-2 of spec §c.3 in float64: the upsampled signal before the nonlinearity."""
    x = x.to(torch.float64)
    if b is not None:
        x = x + b.to(torch.float64).view(1, -1, 1, 1)
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x  # sample k -> position k·up, zeros after it (spec §c.2 step 1)
    px0, px1, py0, py1 = padding
    z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]
    return _conv_valid(z, fu, flip_filter) * (up * up)


def reference(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """Float64 filtered_lrelu by the definition (spec §c.3), differentiable by autograd."""
    v = pre_activation(x, fu, b, up, padding, flip_filter)
    a = torch.where(v < 0, v * slope, v) * gain
    if clamp is not None:
        a = a.clamp(-clamp, clamp)
    return _conv_valid(a, fd, flip_filter)[:, :, ::down, ::down]


# Every filtered_lrelu configuration of StyleGAN3-T and -R (stylegan3-tables.txt), at reduced spatial size:
# (name, up, down, up filter, down filter, padding [x0, x1, y0, y1], gain, slope, input size).
# A filter is None (identity), ("sep", taps, cutoff, width, fs) or ("rad", taps, cutoff, width, fs).
LAYERS = [
    # T, 256: L0 (2,2) sep/sep pad 9,8; L3 (4,2) 24/12 pad -6,-9; L13 (2,2) critically sampled, crop -11,-12.
    ("T-L0", 2, 2, ("sep", 12, 2.0, 12.0, 32), ("sep", 12, 2.0, 12.0, 32), [9, 8, 9, 8], 2 ** 0.5, 0.2, 16),
    ("T-L3", 4, 2, ("sep", 24, 4.0, 8.0, 64), ("sep", 12, 5.6569, 20.6863, 64), [-6, -9, -6, -9],
     2 ** 0.5, 0.2, 16),
    ("T-L13", 2, 2, ("sep", 12, 128.0, 59.173, 512), ("sep", 12, 128.0, 59.173, 512), [-11, -12, -11, -12],
     2 ** 0.5, 0.2, 30),
    # T, 1024: L13 crop -9,-10.
    ("T1024-L13", 2, 2, ("sep", 12, 512.0, 236.69, 2048), ("sep", 12, 512.0, 236.69, 2048),
     [-9, -10, -9, -10], 2 ** 0.5, 0.2, 28),
    # R: L0 (2,2) sep/radial pad 11,10; L2 (4,2) 24/radial pad -2,-5; L12 critical (2,2) sep/sep pad 11,10.
    ("R-L0", 2, 2, ("sep", 12, 2.0, 12.0, 32), ("rad", 12, 2.0, 12.0, 32), [11, 10, 11, 10], 2 ** 0.5, 0.2, 12),
    ("R-L2", 4, 2, ("sep", 24, 3.1748, 9.6504, 64), ("rad", 12, 5.0397, 21.9206, 64), [-2, -5, -2, -5],
     2 ** 0.5, 0.2, 14),
    ("R-L12", 2, 2, ("sep", 12, 322.54, 378.92, 2048), ("sep", 12, 512.0, 236.69, 2048), [11, 10, 11, 10],
     2 ** 0.5, 0.2, 12),
    # ToRGB (both configs): (1,1), no filters, linear (gain 1, slope 1); clamp 256 in the model.
    ("ToRGB", 1, 1, None, None, [0, 0, 0, 0], 1.0, 1.0, 12),
]

# Other factor pairs the kernel serves: (2,4) with a 2-D *up* filter is what the backward of R's (4,2)
# layers runs; (2,1), (1,2) and (1,1) with filters and asymmetric padding exercise the general geometry.
EXTRA = [
    ("up2-down1", 2, 1, ("sep", 12, 2.0, 12.0, 32), ("sep", 6, 2.0, 12.0, 32), [5, 6, 5, 6], 2 ** 0.5, 0.2, 8),
    ("up1-down2", 1, 2, ("sep", 6, 2.0, 12.0, 32), ("rad", 12, 2.0, 12.0, 32), [7, 8, 3, 4], 2 ** 0.5, 0.2, 16),
    ("up2-down4", 2, 4, ("rad", 12, 2.0, 12.0, 32), ("sep", 24, 4.0, 8.0, 64), [13, 12, 10, 9],
     2 ** 0.5, 0.2, 16),
    ("up1-down1", 1, 1, ("sep", 4, 2.0, 12.0, 32), ("sep", 3, 2.0, 12.0, 32), [2, 3, -1, 2], 1.3, 0.3, 10),
]


def make_filter(spec):
    if spec is None:
        return None
    kind, taps, cutoff, width, fs = spec
    return firwin(taps, cutoff, width, fs) if kind == "sep" else jinc(taps, cutoff, width, fs)
