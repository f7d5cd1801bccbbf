"""Triton bias_act (docs/algorithm.md "Op: bias_act"): one fused elementwise kernel for the value and its first and second derivatives.

``y = clamp(act(x + b) * gain, -clamp, clamp)``. The autograd Functions call the same kernel in three modes:
``ORDER = 0`` the value, ``1`` the input gradient ``g * gain * act'(z) * m``, ``2`` the second-order term
``g * gain * act''(z) * m``, with ``z = x + b`` and ``m`` the clamp pass-through mask (1 where
``-clamp <= act(z) * gain <= clamp``, the convention of ``torch.clamp`` used by the reference path). The gradient
of the first-order Function is again that Function (it is linear in the incoming gradient) plus the
``ORDER = 2`` term, so two orders of gradients work, which is what R1 needs.

Only ``tl.exp``/``tl.log`` are used (libdevice is unavailable under the interpreter); ``expm1``, ``tanh`` and
``log1p`` use short Taylor series near 0 to keep full relative precision there.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import INTERPRETED, launch

ACT_CODES = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7,
             "swish": 8}
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus default: linear above it
# Under the interpreter every program costs ~0.1 ms per op, so few, large programs; on a GPU ordinary blocks.
BLOCK = 65536 if INTERPRETED else 2048
# (elements per program; a block is [channels, inner] shaped, see _bias_act_kernel)


@triton.jit
def _expm1(z):
    # exp(z) - 1 without cancellation near 0: Taylor series to z^8 for |z| < 0.05 (error < 1e-16 relative).
    t = z * (1.0 + z * (1.0 / 2 + z * (1.0 / 6 + z * (1.0 / 24 + z * (1.0 / 120 + z * (
        1.0 / 720 + z * (1.0 / 5040 + z * (1.0 / 40320))))))))
    return tl.where(tl.abs(z) < 0.05, t, tl.exp(z) - 1.0)


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    a = tl.abs(z)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    z2 = z * z
    small = z * (1.0 + z2 * (-1.0 / 3 + z2 * (2.0 / 15 + z2 * (-17.0 / 315 + z2 * (62.0 / 2835)))))
    return tl.where(a < 0.05, small, tl.where(z < 0, -big, big))


@triton.jit
def _log1p_small(u):
    # log(1 + u) for 0 <= u <= 1, accurate when u is tiny: series for u < 0.05, plain log otherwise.
    s = u * (1.0 + u * (-1.0 / 2 + u * (1.0 / 3 + u * (-1.0 / 4 + u * (1.0 / 5 + u * (-1.0 / 6 + u * (
        1.0 / 7 + u * (-1.0 / 8 + u * (1.0 / 9 + u * (-1.0 / 10))))))))))
    return tl.where(u < 0.05, s, tl.log(1.0 + u))


@triton.jit
def _act_value(z, alpha, ACT: tl.constexpr):
    if ACT == 0:
        r = z
    elif ACT == 1:
        r = tl.where(z > 0, z, 0.0)
    elif ACT == 2:
        r = tl.where(z > 0, z, z * alpha)
    elif ACT == 3:
        r = _tanh(z)
    elif ACT == 4:
        r = _sigmoid(z)
    elif ACT == 5:
        r = tl.where(z > 0, z, _expm1(tl.minimum(z, 0.0)))
    elif ACT == 6:
        r = tl.where(z > 0, 1.0507009873554804934193349852946 * z,
                     (1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
                     * _expm1(tl.minimum(z, 0.0)))
    elif ACT == 7:
        r = tl.where(z > 20.0, z, tl.maximum(z, 0.0) + _log1p_small(tl.exp(-tl.abs(z))))
    else:
        r = z * _sigmoid(z)
    return r


@triton.jit
def _act_deriv1(z, alpha, ACT: tl.constexpr):
    if ACT == 0:
        r = z * 0.0 + 1.0
    elif ACT == 1:
        r = tl.where(z > 0, 1.0, 0.0) + z * 0.0
    elif ACT == 2:
        r = tl.where(z > 0, 1.0, alpha) + z * 0.0
    elif ACT == 3:
        t = _tanh(z)
        r = 1.0 - t * t
    elif ACT == 4:
        s = _sigmoid(z)
        r = s * (1.0 - s)
    elif ACT == 5:
        r = tl.where(z > 0, 1.0, tl.exp(tl.minimum(z, 0.0)))
    elif ACT == 6:
        r = tl.where(z > 0, 1.0507009873554804934193349852946,
                     (1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
                     * tl.exp(tl.minimum(z, 0.0)))
    elif ACT == 7:
        r = tl.where(z > 20.0, 1.0, _sigmoid(z))
    else:
        s = _sigmoid(z)
        r = s * (1.0 + z * (1.0 - s))
    return r


@triton.jit
def _act_deriv2(z, alpha, ACT: tl.constexpr):
    if ACT == 3:
        t = _tanh(z)
        r = -2.0 * t * (1.0 - t * t)
    elif ACT == 4:
        s = _sigmoid(z)
        r = s * (1.0 - s) * (1.0 - 2.0 * s)
    elif ACT == 5:
        r = tl.where(z > 0, 0.0, tl.exp(tl.minimum(z, 0.0)))
    elif ACT == 6:
        r = tl.where(z > 0, 0.0, (1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
                     * tl.exp(tl.minimum(z, 0.0)))
    elif ACT == 7:
        s = _sigmoid(z)
        r = tl.where(z > 20.0, 0.0, s * (1.0 - s))
    elif ACT == 8:
        s = _sigmoid(z)
        r = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    else:  # piecewise linear activations
        r = z * 0.0
    return r


@triton.jit(do_not_specialize=["channels", "inner", "alpha", "gain", "clamp"])
def _bias_act_kernel(x_ptr, b_ptr, g_ptr, out_ptr, channels, inner, alpha, gain, clamp,
                     ACT: tl.constexpr, ORDER: tl.constexpr, HAS_B: tl.constexpr, HAS_CLAMP: tl.constexpr,
                     FP64: tl.constexpr, BC: tl.constexpr, BI: tl.constexpr):
    """``x`` viewed as ``[outer, channels, inner]`` (the bias runs along ``channels``; without a bias channels = 1 and
    inner = numel). Program (i, c, o) owns a ``[BC, BI]`` block; the bias is indexed by the channel, never by
    dividing a flat index. The block offset is the only 64-bit arithmetic."""
    pid_i = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_o = tl.program_id(2).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)
    i = pid_i * BI + tl.arange(0, BI)
    mask = (c < channels)[:, None] & (i < inner)[None, :]
    base = (pid_o * channels + pid_c * BC) * inner + pid_i * BI
    offs = tl.arange(0, BC)[:, None] * inner + tl.arange(0, BI)[None, :]
    if FP64:
        z = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float64)
    else:
        z = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        z = z + tl.load(b_ptr + c, mask=c < channels, other=0.0).to(z.dtype)[:, None]
    if ORDER == 0:
        r = _act_value(z, alpha, ACT) * gain
        if HAS_CLAMP:
            r = tl.minimum(tl.maximum(r, -clamp), clamp)
    else:
        g = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(z.dtype)
        if ORDER == 1:
            r = g * gain * _act_deriv1(z, alpha, ACT)
        else:
            r = g * gain * _act_deriv2(z, alpha, ACT)
        if HAS_CLAMP:
            v = _act_value(z, alpha, ACT) * gain
            r = tl.where((v >= -clamp) & (v <= clamp), r, 0.0)
    tl.store(out_ptr + base + offs, r.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(order: int, x: torch.Tensor, b: torch.Tensor | None, g: torch.Tensor | None, dim: int, act: str,
            alpha: float, gain: float, clamp: float | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the kernel on contiguous copies; returns a tensor shaped like ``x`` in ``x.dtype`` (written into
    ``out``, a contiguous tensor like ``x``, if given: the tests pass a NaN-filled one)."""
    x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
    numel = x.numel()
    if numel == 0:
        return out
    outer, channels, inner = 1, 1, numel  # x as [outer, channels, inner], bias along channels
    if b is not None:
        channels = x.shape[dim]
        inner = math.prod(x.shape[dim + 1:])
        outer = numel // (channels * inner)
    bi = min(triton.next_power_of_2(inner), BLOCK)
    bc = min(triton.next_power_of_2(channels), max(1, BLOCK // bi))
    gptr = g.to(x.dtype).contiguous() if g is not None else x
    bptr = b.contiguous() if b is not None else x
    step = 65535  # grid axis 2 limit: chunks of the outer dimension (contiguous views)
    for o0 in range(0, outer, step):
        o1 = min(outer, o0 + step)
        flat = slice(o0 * channels * inner, o1 * channels * inner)
        xs, gs, outs = (t.view(-1)[flat] for t in (x, gptr, out))
        grid = (triton.cdiv(inner, bi), triton.cdiv(channels, bc), o1 - o0)
        launch(_bias_act_kernel, grid, xs, bptr, gs, outs, channels, inner, float(alpha), float(gain),
               float(clamp) if clamp is not None else 0.0,
               ACT=ACT_CODES[act], ORDER=order, HAS_B=b is not None, HAS_CLAMP=clamp is not None,
               FP64=x.dtype == torch.float64, BC=bc, BI=bi, num_warps=4 if bc * bi <= 1024 else 8)
    return out


def _sum_to_bias(dx: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Bias gradient: ``dx`` summed over every dim except ``dim`` (accumulated in float32 at least)."""
    dims = [d for d in range(dx.ndim) if d != dim]
    acc = dx if dx.dtype == torch.float64 else dx.float()
    return acc.sum(dims).to(b.dtype)


class _BiasActGrad(torch.autograd.Function):
    """``dx = dy * gain * act'(x + b) * m``; differentiable once more (second order)."""

    @staticmethod
    def forward(ctx, dy, x, b, dim, act, alpha, gain, clamp):
        ctx.save_for_backward(dy, x, b)
        ctx.args = (dim, act, alpha, gain, clamp)
        return _launch(1, x, b, dy, dim, act, alpha, gain, clamp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ddx):
        dy, x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.args
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _launch(1, x, b, ddx, dim, act, alpha, gain, clamp)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            d_x = _launch(2, x, b, ddx * dy.to(ddx.dtype), dim, act, alpha, gain, clamp)
            if b is not None and ctx.needs_input_grad[2]:
                d_b = _sum_to_bias(d_x, b, dim)
        return d_dy, d_x, d_b, None, None, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):
        ctx.save_for_backward(x, b)
        ctx.args = (dim, act, alpha, gain, clamp)
        return _launch(0, x, b, None, dim, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.args
        dx = _BiasActGrad.apply(dy, x, b, dim, act, alpha, gain, clamp)
        db = _sum_to_bias(dx, b, dim) if b is not None and ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None


def bias_act_triton(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                    clamp: float | None) -> torch.Tensor:
    """Triton bias_act; arguments validated by ``ops.bias_act`` (``dim`` non-negative, defaults resolved).

    Returns a tensor of ``x``'s shape and dtype, differentiable to second order with respect to ``x`` and ``b``.
    """
    return _BiasAct.apply(x, b, dim, act, alpha, gain, clamp)


def launch_cost(p: dict, programs: int) -> dict:
    """What one launch of ``_bias_act_kernel`` moves (elementwise: no multiply-adds worth counting)."""
    x, out = p["x_ptr"], p["out_ptr"]
    n = x.numel() * x.element_size() + out.numel() * out.element_size()
    if p["ORDER"] > 0:
        n += p["g_ptr"].numel() * p["g_ptr"].element_size()
    return {"macs": {}, "dram_bytes": n, "tile_bytes": n}


def floor_bytes(p: dict) -> int:
    """The memory floor of one launch: what it must read and write once."""
    return launch_cost(p, 1)["dram_bytes"]
