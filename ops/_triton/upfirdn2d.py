"""Triton upfirdn2d (docs/algorithm.md "Op: upfirdn2d"): polyphase upsample + pad + FIR + downsample in one kernel per pass.

Each output sample ``o`` (per axis) reads the padded, zero-inserted signal at ``i = o * down + t - p0`` for the
taps ``t``; only taps with ``i % up == 0`` meet a real input sample ``i / up``. The kernel therefore visits just
``ceil(taps / up)`` taps per axis, starting at the output's phase ``(p0 - o * down) mod up`` -- never the inserted
zeros, and never an output that decimation would drop. Programs are grouped by output phase class, so the taps are
per-program scalars and the input indices affine in the tile index (no per-element division). A 2-D filter is one pass; a separable one is a pass along
x and one along y (intermediate kept in float32 for half inputs).

The autograd Function's gradient is the adjoint upfirdn2d (up and down swapped, filter flip toggled, same gain,
``ops.upfirdn2d.adjoint_padding``) through the same Function, so every order of gradients works.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._common import adjoint_function, output_size
from . import INTERPRETED, launch

# Outputs per program: under the interpreter every program costs ~0.1 ms per op, so few, large programs; on a GPU
# 1024-element tiles (4 warps, 8 outputs per thread).
BLOCK = 65536 if INTERPRETED else 512


@triton.jit(do_not_specialize=["in_h", "in_w", "out_h", "out_w", "px0", "py0", "tiles_y", "tiles_x"])
def _upfirdn2d_kernel(x_ptr, g_ptr, out_ptr, in_h, in_w, out_h, out_w, px0, py0, tiles_y, tiles_x,
                      UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
                      PX: tl.constexpr, PY: tl.constexpr, FH: tl.constexpr, FW: tl.constexpr,
                      FP64: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr):
    """One program = a [BY, BX] tile of one output phase class of one (n, c) plane.

    The outputs ``o ≡ r (mod P)`` (``P = up / gcd(up, down)`` per axis) all meet the zero-inserted signal at the
    same phase, so within a program the taps that land on real samples are the same scalars for every element, and
    the input index of tap ``k`` is affine in the class-local index ``j``: ``i0 + j·(P·down/up) + k``. No per-element
    division or modulo; the plane offset is the only 64-bit arithmetic.
    """
    plane = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    tix = pid % tiles_x
    rest = pid // tiles_x
    tiy = rest % tiles_y
    cls = rest // tiles_y
    rx = cls % PX
    ry = cls // PX
    # Phase of the first tap that lands on a real sample (Python-style modulo of a signed scalar).
    phx = ((px0 - rx * DOWNX) % UPX + UPX) % UPX
    phy = ((py0 - ry * DOWNY) % UPY + UPY) % UPY
    # Input index of that tap for the class's first output (exact: the numerator is a multiple of up).
    ix0 = (rx * DOWNX + phx - px0) // UPX
    iy0 = (ry * DOWNY + phy - py0) // UPY
    j = tiy * BY + tl.arange(0, BY)
    i = tix * BX + tl.arange(0, BX)
    oy = ry + j * PY
    ox = rx + i * PX
    iy = iy0 + j * (PY * DOWNY // UPY)
    ix = ix0 + i * (PX * DOWNX // UPX)
    out_ok = (oy < out_h)[:, None] & (ox < out_w)[None, :]
    x_base = x_ptr + plane * in_h * in_w
    if FP64:
        acc = tl.zeros([BY, BX], dtype=tl.float64)
    else:
        acc = tl.zeros([BY, BX], dtype=tl.float32)
    for ky in tl.static_range((FH + UPY - 1) // UPY):
        ty = phy + ky * UPY
        yy = iy + ky
        y_ok = (yy >= 0) & (yy < in_h) & (oy < out_h)
        row = tl.where(y_ok, yy, 0) * in_w
        for kx in tl.static_range((FW + UPX - 1) // UPX):
            tx = phx + kx * UPX
            tap_ok = (ty < FH) & (tx < FW)
            tap = tl.where(tap_ok, tl.load(g_ptr + tl.where(tap_ok, ty * FW + tx, 0)), 0.0)
            xx = ix + kx
            x_ok = (xx >= 0) & (xx < in_w) & (ox < out_w)
            val = tl.load(x_base + row[:, None] + tl.where(x_ok, xx, 0)[None, :],
                          mask=y_ok[:, None] & x_ok[None, :], other=0.0)
            acc += tap.to(acc.dtype) * val.to(acc.dtype)
    out_base = out_ptr + plane * out_h * out_w
    tl.store(out_base + oy[:, None] * out_w + ox[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_ok)


def _tile(n: int, cap: int) -> int:
    """Power-of-two tile side for ``n`` outputs along an axis, at most ``cap``."""
    return min(triton.next_power_of_2(max(n, 1)), cap)


def _pass(x: torch.Tensor, g: torch.Tensor, upx: int, upy: int, downx: int, downy: int, px0: int, px1: int,
          py0: int, py1: int, out_dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """One kernel launch: ``x [N, C, H, W]`` contiguous, ``g [fh, fw]`` correlation-ordered, gain applied."""
    n, c, in_h, in_w = x.shape
    fh, fw = g.shape
    out_h = output_size(in_h, upy, downy, py0, py1, fh)
    out_w = output_size(in_w, upx, downx, px0, px1, fw)
    if out is None:
        out = torch.empty([n, c, out_h, out_w], dtype=out_dtype, device=x.device)
    if out.numel() == 0:
        return out
    # Phase period per axis: outputs P apart meet the zero-inserted signal at the same phase.
    pxp, pyp = upx // math.gcd(upx, downx), upy // math.gcd(upy, downy)
    cls_w, cls_h = -(-out_w // pxp), -(-out_h // pyp)  # outputs per class (at most) along each axis
    bx = _tile(cls_w, 64 if not INTERPRETED else 256)
    by = _tile(cls_h, max(1, BLOCK // bx))
    tiles_x, tiles_y = -(-cls_w // bx), -(-cls_h // by)
    grid = (n * c, tiles_x * tiles_y * pxp * pyp)
    launch(_upfirdn2d_kernel, grid, x, g.contiguous(), out, in_h, in_w, out_h, out_w, px0, py0, tiles_y, tiles_x,
           UPX=upx, UPY=upy, DOWNX=downx, DOWNY=downy, PX=pxp, PY=pyp, FH=fh, FW=fw,
           FP64=x.dtype == torch.float64, BY=by, BX=bx, num_warps=4)
    return out


def upfirdn2d_forward(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                      flip_filter: bool, gain: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Forward value without autograd bookkeeping (``out``: optional preallocated result; the tests poison it)."""
    x = x.contiguous()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    g = f.to(device=x.device, dtype=acc) * (gain ** (f.ndim / 2))
    if not flip_filter:  # true convolution = correlation with the flipped filter
        g = g.flip(list(range(g.ndim)))
    px0, px1, py0, py1 = padding
    if g.ndim == 2:
        return _pass(x, g, up, up, down, down, px0, px1, py0, py1, x.dtype, out)
    mid = _pass(x, g[None, :], up, 1, down, 1, px0, px1, 0, 0, acc)
    return _pass(mid, g[:, None], 1, up, 1, down, 0, 0, py0, py1, x.dtype, out)


_Upfirdn2d = adjoint_function(upfirdn2d_forward, "Upfirdn2dTriton")


def upfirdn2d_triton(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                     flip_filter: bool, gain: float) -> torch.Tensor:
    """Triton upfirdn2d; arguments validated by ``ops.upfirdn2d`` (padding as ``[x0, x1, y0, y1]``).

    Returns ``[N, C, out_h, out_w]`` in ``x.dtype``, differentiable with respect to ``x`` to any order.
    """
    return _Upfirdn2d.apply(x, f, up, down, list(padding), flip_filter, gain)


def launch_cost(p: dict, programs: int) -> dict:
    """What one launch of ``_upfirdn2d_kernel`` executes (see ``filtered_lrelu.launch_cost``)."""
    x, out = p["x_ptr"], p["out_ptr"]
    taps = -(-p["FH"] // p["UPY"]) * -(-p["FW"] // p["UPX"])  # polyphase: only taps on real samples
    unit = "cuda_fp64" if p["FP64"] else "cuda_fp32"
    dram = x.numel() * x.element_size() + out.numel() * out.element_size()
    return {"macs": {unit: out.numel() * taps}, "dram_bytes": dram,
            "tile_bytes": out.numel() * (taps * x.element_size() + out.element_size())}


def floor_bytes(p: dict) -> int:
    """The memory floor of one launch: its input and output once."""
    x, out = p["x_ptr"], p["out_ptr"]
    return x.numel() * x.element_size() + out.numel() * out.element_size()
