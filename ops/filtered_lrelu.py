"""Filtered leaky ReLU: bias, upsample + FIR, leaky ReLU + gain + clamp, FIR + downsample (docs/algorithm.md "Op: filtered_lrelu").

The nonlinearity runs at the temporary (upsampled) rate between the two filters; this is StyleGAN3's alias
suppression for the activation. This module holds the argument checks, the reference (the definition, step by
step) and the dispatch; the CPU path is ops/_cpu/filtered_lrelu.py, the Triton kernel ops/_triton/filtered_lrelu.py.
"""

from __future__ import annotations

import math

import torch

from ._cpu.filtered_lrelu import filtered_lrelu_cpu
from ._dispatch import select_impl
from .bias_act import bias_act_ref, check_bias, check_real
from .upfirdn2d import (check_factor, check_filter, check_gain, check_input, filter_size, parse_padding,
                        upfirdn2d_ref)


def output_shape(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, up: int, down: int,
                 padding: list[int]) -> tuple[int, int]:
    """``(out_h, out_w)`` of filtered_lrelu (docs/algorithm.md "Op: filtered_lrelu"):
    ``(in * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down`` per axis."""
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = padding
    out_w = (x.shape[3] * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (x.shape[2] * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_h, out_w


def filtered_lrelu_ref(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None,
                       b: torch.Tensor | None, up: int, down: int, padding: list[int], gain: float,
                       slope: float, clamp: float | None, flip_filter: bool) -> torch.Tensor:
    """The reference: docs/algorithm.md "Op: filtered_lrelu" steps 1-4 as written (arguments already validated),
    with the reference upfirdn2d and bias_act; differentiable to any order.

    1. add the bias; 2. upsample by ``up`` with ``fu`` (gain ``up**2``) and the padding; 3. leaky ReLU, gain,
    clamp at the upsampled rate; 4. filter with ``fd`` and keep every ``down``-th sample."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d_ref(x, fu, up, 1, padding, flip_filter, float(up * up))
    x = bias_act_ref(x, None, 1, "lrelu", slope, gain, clamp)
    return upfirdn2d_ref(x, fd, 1, down, [0, 0, 0, 0], flip_filter, 1.0)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False, impl: str = "auto") -> torch.Tensor:
    """Bias, upsample, filter, leaky ReLU, clamp, filter, downsample (docs/algorithm.md "Op: filtered_lrelu").

    Args:
        x: ``[N, C, H, W]`` float16/float32/float64 (bfloat16 on GPU).
        fu: float32 upsampling filter ``[taps]`` / ``[fh, fw]`` / None (identity); applied with gain ``up**2``.
        fd: float32 downsampling filter ``[taps]`` / ``[fh, fw]`` / None (identity); gain 1.
        b: bias ``[C]`` (cast to ``x.dtype``) or None.
        up: upsampling factor, int >= 1.  down: downsampling factor, int >= 1.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]``, in samples of the upsampled image; negative crops.
        gain: multiplies the leaky ReLU's output (sqrt(2) for StyleGAN3's layers, 1 for ToRGB).
        slope: leaky ReLU slope for negative values (1 = linear).
        clamp: clamp the activation to ``[-clamp, +clamp]`` (after gain); None = no clamp.
        flip_filter: False = true convolution, True = correlation (both filters).
        impl: 'auto' | 'ref' | 'cpu' | 'triton' (docs/ops.md "Backends").

    Returns:
        ``[N, C, out_h, out_w]`` in ``x``'s dtype with
        ``out = (in * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down`` per axis;
        differentiable with respect to ``x`` and ``b`` to any order.
    """
    op = "filtered_lrelu"
    check_input(x, op)
    fu = check_filter(fu, "fu", op)
    fd = check_filter(fd, "fd", op)
    up = check_factor("up", up, op)
    down = check_factor("down", down, op)
    padding = parse_padding(padding, op)
    gain = check_gain(gain, op)
    slope = check_real("slope", slope, op)
    clamp = check_real("clamp", clamp, op, allow_none=True, nonneg=True)
    if b is not None:
        check_bias(b, x, 1, op)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = padding
    for axis, n, p0, p1, tu, td in (("x", x.shape[3], px0, px1, fu_w, fd_w), ("y", x.shape[2], py0, py1, fu_h, fd_h)):
        if n * up + p0 + p1 - (tu - 1) < td:
            raise ValueError(
                f"{op}: padding {padding} leaves no output along {axis}: input size {n} * up {up} + padding "
                f"{p0} + {p1} = {n * up + p0 + p1} is too small for the {tu}-tap fu and {td}-tap fd filters")
    impl = select_impl(impl, x, op)
    if impl == "triton":
        # imported on first use: Triton reads TRITON_INTERPRET when its kernels are decorated (ops/_dispatch.py)
        from ._triton.filtered_lrelu import filtered_lrelu_triton
        return filtered_lrelu_triton(x, fu, fd, b, up, down, padding, gain, slope, clamp, bool(flip_filter))
    if impl == "cpu":
        return filtered_lrelu_cpu(x, fu, fd, b, up, down, padding, gain, slope, clamp, bool(flip_filter))
    return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, bool(flip_filter))
