"""Triton upfirdn2d (spec §c.2): polyphase upsample + pad + FIR + downsample in one kernel per pass.

Each output sample ``o`` (per axis) reads the padded, zero-inserted signal at ``i = o * down + t - p0`` for the
taps ``t``; only taps with ``i % up == 0`` meet a real input sample ``i / up``. The kernel therefore visits just
``ceil(taps / up)`` taps per axis, starting at the output's phase ``(p0 - o * down) mod up`` -- never the inserted
zeros, and never an output that decimation would drop. A 2-D filter is one pass; a separable one is a pass along
x and one along y (intermediate kept in float32 for half inputs).

The autograd Function's gradient is the adjoint upfirdn2d (up and down swapped, filter flip toggled, same gain,
``ops.upfirdn2d.adjoint_padding``) through the same Function, so every order of gradients works.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..upfirdn2d import adjoint_function, output_size
from . import INTERPRETED, launch

# Under the interpreter every program costs ~0.1 ms per op: few, large programs. On a GPU ordinary blocks.
BLOCK = 65536 if INTERPRETED else 1024


@triton.jit
def _upfirdn2d_kernel(x_ptr, g_ptr, out_ptr, total, in_h, in_w, out_h, out_w, px0, py0,
                      UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
                      FH: tl.constexpr, FW: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    ox = offs % out_w
    oy = (offs // out_w) % out_h
    plane = offs // (out_w * out_h)
    # phase of the first tap that lands on a real (non-inserted) sample; Python-style modulo of a signed value
    phx = ((px0 - ox * DOWNX) % UPX + UPX) % UPX
    phy = ((py0 - oy * DOWNY) % UPY + UPY) % UPY
    base = plane * in_h * in_w
    if FP64:
        acc = tl.zeros([BLOCK], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    for ky in tl.static_range((FH + UPY - 1) // UPY):
        ty = phy + ky * UPY
        iy = (oy * DOWNY + ty - py0) // UPY  # exact: the numerator is a multiple of UPY
        ok_y = mask & (ty < FH) & (iy >= 0) & (iy < in_h)
        for kx in tl.static_range((FW + UPX - 1) // UPX):
            tx = phx + kx * UPX
            ix = (ox * DOWNX + tx - px0) // UPX
            ok = ok_y & (tx < FW) & (ix >= 0) & (ix < in_w)
            tap = tl.load(g_ptr + tl.where(ok, ty * FW + tx, 0), mask=ok, other=0.0)
            val = tl.load(x_ptr + base + tl.where(ok, iy * in_w + ix, 0), mask=ok, other=0.0)
            acc += tap.to(acc.dtype) * val.to(acc.dtype)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _pass(x: torch.Tensor, g: torch.Tensor, upx: int, upy: int, downx: int, downy: int, px0: int, px1: int,
          py0: int, py1: int, out_dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """One kernel launch: ``x [N, C, H, W]`` contiguous, ``g [fh, fw]`` correlation-ordered, gain applied."""
    n, c, in_h, in_w = x.shape
    fh, fw = g.shape
    out_h = output_size(in_h, upy, downy, py0, py1, fh)
    out_w = output_size(in_w, upx, downx, px0, px1, fw)
    if out is None:
        out = torch.empty([n, c, out_h, out_w], dtype=out_dtype, device=x.device)
    total = out.numel()
    if total == 0:
        return out
    grid = (triton.cdiv(total, BLOCK),)
    launch(_upfirdn2d_kernel, grid, x, g.contiguous(), out, total, in_h, in_w, out_h, out_w, px0, py0,
                            UPX=upx, UPY=upy, DOWNX=downx, DOWNY=downy, FH=fh, FW=fw,
                            FP64=x.dtype == torch.float64, BLOCK=BLOCK)
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
    taps = -(-p["FH"] // p["UPY"]) * -(-p["FW"] // p["UPX"])
    unit = "cuda_fp64" if p["FP64"] else "cuda_fp32"
    dram = x.numel() * x.element_size() + out.numel() * out.element_size()
    return {"macs": {unit: out.numel() * taps}, "dram_bytes": dram,
            "tile_bytes": out.numel() * (taps * x.element_size() + out.element_size())}


def floor_bytes(p: dict) -> int:
    """The memory floor of one launch: its input and output once."""
    x, out = p["x_ptr"], p["out_ptr"]
    return x.numel() * x.element_size() + out.numel() * out.element_size()
