"""upfirdn2d's CPU path (impl 'cpu'): polyphase, channels-last, with the adjoint as its gradient.

Upsampling is one grouped convolution per pass that computes every output phase from the real samples only
(never the inserted zeros), filter + decimate is a strided depthwise convolution (it computes only the kept
outputs), and a separable filter runs as two 1-D passes. The gradient is the adjoint upfirdn2d through the same
code (docs/algorithm.md "Op: upfirdn2d"), because PyTorch's CPU transposed convolutions (what autograd would use
for the gradient of a strided convolution) are several times slower than these. Same values as the reference
(ops/upfirdn2d.py) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import adjoint_function, memory_format, pad_axis


def _phase_axis(n: int, up: int, taps: int, p0: int, p1: int) -> tuple[int, int, int, int, int]:
    """Polyphase bookkeeping for upsampling along one axis.

    The padded, zero-inserted signal filtered in valid mode is ``c[i] = sum_k x[k] h[m - k*up]`` with
    ``m = i + taps - 1 - p0`` and ``h`` the filter in true-convolution orientation. Writing ``m = q*up + r``,
    ``c[i] = sum_s x[q - s] h[s*up + r]``: for each phase ``r`` an ordinary convolution of ``x`` with every
    ``up``-th tap (``L = ceil(taps / up)`` of them), evaluated at ``q``. Returns ``(L, pad_before, pad_after,
    offset, length)``: pad ``x`` by these, convolve (valid) to get ``q`` in ``[q_lo, q_hi)`` for every phase,
    interleave phases, and the outputs are ``length`` samples starting at ``offset``.
    """
    length = n * up + p0 + p1 - taps + 1
    phase_taps = -(-taps // up)
    m0 = taps - 1 - p0
    q_lo, q_hi = m0 // up, -(-(m0 + length) // up)
    return phase_taps, phase_taps - 1 - q_lo, q_hi - n, m0 - q_lo * up, length


def _pass(x: torch.Tensor, k: torch.Tensor, up: tuple[int, int], down: tuple[int, int], padding: list[int],
          flip_filter: bool) -> torch.Tensor:
    """One depthwise pass with a 2-D kernel ``k [kh, kw]`` (``[1, taps]``/``[taps, 1]`` for a 1-D pass of a
    separable filter), factors ``up = (uy, ux)``, ``down = (dy, dx)``, ``padding = [x0, x1, y0, y1]``.

    On CPU the pass runs in channels-last memory (the result is channels-last too): PyTorch's CPU depthwise
    convolution is 2.5-3x faster on it than on NCHW (docs/ops.md)."""
    c = x.shape[1]
    kh, kw = k.shape
    (uy, ux), (dy, dx) = up, down
    px0, px1, py0, py1 = padding
    fmt = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    if uy == 1 and ux == 1:
        # Filter + decimate: a strided correlation computes only the kept outputs.
        g = k if flip_filter else k.flip([0, 1])
        x = pad_axis(pad_axis(x, 3, px0, px1), 2, py0, py1).contiguous(memory_format=fmt)
        return F.conv2d(x, g[None, None].repeat(c, 1, 1, 1), stride=(dy, dx), groups=c)
    # Zero-insert + pad + filter, polyphase: one depthwise conv per phase computes that phase's outputs (never
    # touching the inserted zeros), written interleaved into the output.
    h = k.flip([0, 1]) if flip_filter else k
    ly, ya, yb, yoff, ylen = _phase_axis(x.shape[2], uy, kh, py0, py1)
    lx, xa, xb, xoff, xlen = _phase_axis(x.shape[3], ux, kw, px0, px1)
    hp = h.new_zeros(ly * uy, lx * ux)
    hp[:kh, :kw] = h
    # phase (ry, rx) = hp[ry::uy, rx::ux], flipped for correlation
    w = hp.view(ly, uy, lx, ux).permute(1, 3, 0, 2).flip([2, 3]).reshape(uy, ux, 1, 1, ly, lx)
    x = pad_axis(pad_axis(x, 3, xa, xb), 2, ya, yb).contiguous(memory_format=fmt)
    n = x.shape[0]
    qy, qx = x.shape[2] - ly + 1, x.shape[3] - lx + 1
    y = torch.empty(n, c, qy * uy, qx * ux, dtype=x.dtype, device=x.device, memory_format=fmt)
    for ry in range(uy):
        for rx in range(ux):
            y[:, :, ry::uy, rx::ux] = F.conv2d(x, w[ry, rx].repeat(c, 1, 1, 1), groups=c)
    return y[:, :, yoff:yoff + ylen:dy, xoff:xoff + xlen:dx]


def upfirdn2d_cpu_value(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                        flip_filter: bool, gain: float) -> torch.Tensor:
    """The forward value (arguments validated), no autograd bookkeeping of its own."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    px0, px1, py0, py1 = padding
    fmt = memory_format(x)  # the output's: the input's (filtered_lrelu keeps its big tensors channels-last)
    if f.ndim == 2:
        x = _pass(x, f, (up, up), (down, down), padding, flip_filter)
    else:
        # Separable: along x, then along y (docs/algorithm.md "Op: upfirdn2d"), each with sqrt(gain).
        x = _pass(x, f[None, :], (1, up), (1, down), [px0, px1, 0, 0], flip_filter)
        x = _pass(x, f[:, None], (up, 1), (down, 1), [0, 0, py0, py1], flip_filter)
    return x.contiguous(memory_format=fmt)


_Upfirdn2dCpu = adjoint_function(upfirdn2d_cpu_value, "Upfirdn2dCpu")


def upfirdn2d_cpu(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                  flip_filter: bool, gain: float) -> torch.Tensor:
    """upfirdn2d (arguments validated) by polyphase PyTorch convolutions; the gradient is the adjoint upfirdn2d
    through the same path (strided conv <-> polyphase conv, both fast), differentiable to any order."""
    return _Upfirdn2dCpu.apply(x, f, up, down, list(padding), flip_filter, gain)
