"""Independent float64 constructions of the ops straight from their definitions (docs/algorithm.md "Ops"), for tests.

Deliberately naive and independent of ops/: explicit zero insertion, explicit pad/crop by index arithmetic, the
FIR as a sum of shifted slices (no conv2d), decimation by slicing. Also the StyleGAN3 layer configurations the
tests run at reduced size, and `graph_nodes` (which autograd Functions, i.e. which backend, produced a tensor).
"""

from __future__ import annotations

import math

import torch


def upfirdn2d_def(x, f, up=1, down=1, padding=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """``x [N, C, H, W]`` float64, ``f`` None / ``[taps]`` / ``[fh, fw]`` -> float64 by the definition of §c.2."""
    x = x.double()
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones(1, 1)
    f = f.double()
    if f.ndim == 1:
        f = torch.outer(f, f)  # separable = x pass then y pass = the outer-product kernel
    fh, fw = f.shape
    x0, x1, y0, y1 = padding
    # 1. zero insertion: sample k goes to k*up
    u = torch.zeros(n, c, h * up, w * up, dtype=torch.float64)
    u[:, :, ::up, ::up] = x
    # 2. pad / crop: padded[i] = u[i - p0] where in range
    ph, pw = h * up + y0 + y1, w * up + x0 + x1
    p = torch.zeros(n, c, ph, pw, dtype=torch.float64)
    i0, i1 = max(0, y0), min(ph, h * up + y0)  # rows of `p` that come from `u`
    j0, j1 = max(0, x0), min(pw, w * up + x0)
    if i0 < i1 and j0 < j1:
        p[:, :, i0:i1, j0:j1] = u[:, :, i0 - y0:i1 - y0, j0 - x0:j1 - x0]
    # 3. valid convolution (true convolution unless flip_filter) as a sum of shifted slices
    oh, ow = ph - fh + 1, pw - fw + 1
    out = torch.zeros(n, c, oh, ow, dtype=torch.float64)
    for a in range(fh):
        for b in range(fw):
            tap = f[a, b] if flip_filter else f[fh - 1 - a, fw - 1 - b]
            out += tap * p[:, :, a:a + oh, b:b + ow]
    # 4. decimation
    return out[:, :, ::down, ::down] * gain


def filtered_lrelu_def(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter=False):
    """float64 filtered_lrelu by the steps of docs/algorithm.md "Op: filtered_lrelu"."""
    x = x.double()
    if b is not None:
        x = x + b.double().reshape(1, -1, 1, 1)
    x = upfirdn2d_def(x, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up * up)
    x = torch.where(x < 0, x * slope, x) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d_def(x, fd, down=down, flip_filter=flip_filter)


def lowpass_taps(numtaps: int, cutoff: float, fs: float) -> torch.Tensor:
    """A windowed-sinc low-pass, unit DC gain, float32 (shape of StyleGAN3's filters, not bit-identical)."""
    m = torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2
    h = torch.sinc(2 * cutoff / fs * m) * torch.kaiser_window(numtaps, periodic=False, beta=4.0, dtype=torch.float64)
    return (h / h.sum()).float()


def radial_taps(numtaps: int, cutoff: float, fs: float) -> torch.Tensor:
    """A radially symmetric 2-D low-pass ``[numtaps, numtaps]``, unit DC gain, float32 (config R's kind)."""
    u = (torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2) / fs
    r = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    g = torch.sinc(2 * cutoff * r) * torch.outer(*(2 * [torch.kaiser_window(numtaps, False, 4.0, dtype=torch.float64)]))
    return (g / g.sum()).float()


# Every distinct (up, down, fu taps, fd taps/kind, padding, conv kernel) of the StyleGAN3-T and -R synthesis
# layers at 256 and 1024 (stylegan3-tables.txt). `in_size` is the layer's input size + conv kernel - 1 (the
# modulated conv is "full"); `small_in` is a reduced input size with the same padding that the tests use.
# Fields: name, up, down, fu_taps, fd_taps, fd_radial, padding, gain, slope, in_size, out_size, small_in
SG3_LAYERS = [
    ("T-up2", 2, 2, 12, 12, False, [9, 8, 9, 8], math.sqrt(2), 0.2, 38, 36, 14),
    ("T-up4", 4, 2, 24, 12, False, [-6, -9, -6, -9], math.sqrt(2), 0.2, 38, 52, 16),
    ("T-crit-crop", 2, 2, 12, 12, False, [-11, -12, -11, -12], math.sqrt(2), 0.2, 278, 256, 27),
    ("R-up2-radial", 2, 2, 12, 12, True, [11, 10, 11, 10], math.sqrt(2), 0.2, 36, 36, 12),
    ("R-up4-radial", 4, 2, 24, 12, True, [-2, -5, -2, -5], math.sqrt(2), 0.2, 36, 52, 14),
    ("R-crit", 2, 2, 12, 12, False, [11, 10, 11, 10], math.sqrt(2), 0.2, 276, 276, 12),
    ("R-crit-crop", 2, 2, 12, 12, False, [-9, -10, -9, -10], math.sqrt(2), 0.2, 276, 256, 26),
    ("torgb", 1, 1, 1, 1, False, [0, 0, 0, 0], 1.0, 1.0, 256, 256, 12),
]


def layer_filters(up: int, down: int, fu_taps: int, fd_taps: int, fd_radial: bool):
    """``(fu, fd)`` float32 for a SG3_LAYERS row (None where the filter is the identity)."""
    fu = lowpass_taps(fu_taps, 1.0, 2.0 * up) if fu_taps > 1 else None
    if fd_taps == 1:
        fd = None
    elif fd_radial:
        fd = radial_taps(fd_taps, 1.0, 2.0 * down)
    else:
        fd = lowpass_taps(fd_taps, 1.0, 2.0 * down)
    return fu, fd


def graph_nodes(t: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind ``t`` (which backend's Functions ran)."""
    seen, names, stack = set(), set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names
