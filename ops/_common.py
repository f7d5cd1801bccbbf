"""Shape arithmetic and the adjoint-gradient Function shared by every upfirdn2d backend (docs/algorithm.md
"Op: upfirdn2d"); a leaf module, so that the op module, ops/_cpu and ops/_triton can all import it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(fw, fh)`` of a checked filter (``(1, 1)`` for None)."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def output_size(in_size: int, up: int, down: int, p0: int, p1: int, taps: int) -> int:
    """Output length along one axis, ``(in * up + p0 + p1 - taps) // down + 1`` (docs/algorithm.md "Op: upfirdn2d")."""
    return (in_size * up + p0 + p1 - taps) // down + 1


def adjoint_padding(in_h: int, in_w: int, out_h: int, out_w: int, fw: int, fh: int, up: int, down: int,
                    padding: list[int]) -> list[int]:
    """Padding of the upfirdn2d that is the adjoint (the gradient with respect to ``x``) of
    ``upfirdn2d(x [.., in_h, in_w], f [fh, fw], up, down, padding) -> [.., out_h, out_w]``.

    The adjoint runs with ``up`` and ``down`` swapped, the filter flip toggled and the same gain (docs/algorithm.md "Op: upfirdn2d").
    """
    px0, _, py0, _ = padding
    return [fw - px0 - 1, in_w * up - out_w * down + px0 - up + 1,
            fh - py0 - 1, in_h * up - out_h * down + py0 - up + 1]


def pad_axis(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) ``x`` along ``dim``, also when the crop passes the whole signal."""
    if before == 0 and after == 0:
        return x
    n = x.shape[dim]
    lo, hi = max(0, -before), min(n, n + after)
    length = n + before + after
    if lo >= hi:  # nothing of the signal survives: all padding
        shape = list(x.shape)
        shape[dim] = length
        return x.new_zeros(shape)
    x = x.narrow(dim, lo, hi - lo)
    pads = [0, 0] * (x.ndim - 1 - dim) + [max(0, before), max(0, after)]
    return F.pad(x, pads)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a CPU tensor stored channels-last (and not also plain contiguous), else contiguous."""
    if x.device.type == "cpu" and x.ndim == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def adjoint_function(forward_value, name: str) -> type:
    """An autograd Function ``apply(x, f, up, down, padding, flip_filter, gain)`` whose forward is
    ``forward_value`` (same arguments) and whose gradient is the adjoint upfirdn2d (docs/algorithm.md "Op: upfirdn2d")
    computed by the Function itself, so every order of gradients works. Every backend's upfirdn2d is one."""

    def forward(ctx, x, f, up, down, padding, flip_filter, gain):
        ctx.save_for_backward(f)
        ctx.args = (x.shape[2], x.shape[3], up, down, padding, flip_filter, gain)
        ctx.fmt = memory_format(x)
        return forward_value(x, f, up, down, padding, flip_filter, gain)

    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        in_h, in_w, up, down, padding, flip_filter, gain = ctx.args
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        fw, fh = filter_size(f)
        p = adjoint_padding(in_h, in_w, dy.shape[2], dy.shape[3], fw, fh, up, down, padding)
        # the gradient in the forward input's memory format (so the adjoint returns it in that format)
        dy = dy.contiguous(memory_format=ctx.fmt)
        return function.apply(dy, f, down, up, p, not flip_filter, gain), None, None, None, None, None, None

    # built with type() so that autograd's node is named after `name` (e.g. "Upfirdn2dRefBackward")
    function = type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                        "backward": staticmethod(backward)})
    return function


def check_conv_args(op: str, x, weight, kernel: str = "kh, kw") -> None:
    """ValueError naming `op` unless x is [N, I, H, W] and weight [O, I, kh, kw] (the two convolution ops)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{op}: x must be a 4-D tensor [N, I, H, W], got "
                         f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight must be [O, {x.shape[1]}, {kernel}] for x of shape {list(x.shape)}, got "
                         f"{list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
