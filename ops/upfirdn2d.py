"""Upsample, FIR-filter, downsample: ``upfirdn2d`` and its helpers (docs/algorithm.md "Op: upfirdn2d").

Per channel, in this order: insert ``up - 1`` zeros after each sample; pad by ``[x0, x1, y0, y1]`` (negative
values crop); convolve in "valid" mode with the filter (true convolution unless ``flip_filter``); keep every
``down``-th sample starting at index 0. Output size per axis: ``(in * up + p0 + p1 - taps) // down + 1``.

The reference path here is polyphase: upsampling is one grouped convolution per pass that computes every output
phase from the real samples only (never the inserted zeros), filter + decimate is a strided depthwise convolution
(it computes only the kept outputs), and a separable filter runs as two 1-D passes. Its gradient is the adjoint
upfirdn2d through the same code (docs/algorithm.md "Op: upfirdn2d"), because PyTorch's CPU transposed convolutions (what autograd would
use for the gradient of a strided convolution) are several times slower than these.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F

from ._dispatch import select_impl


def parse_padding(padding, op: str = "upfirdn2d") -> list[int]:
    """``padding`` as ``[x0, x1, y0, y1]``: an int ``p`` means all four, a pair ``[px, py]`` means
    ``[px, px, py, py]``, four ints are taken as they are. Negative values crop."""
    if isinstance(padding, Integral) and not isinstance(padding, bool):
        return [int(padding)] * 4
    if isinstance(padding, torch.Tensor):
        padding = padding.tolist()
    if isinstance(padding, (list, tuple)) and len(padding) in (2, 4) and all(
            isinstance(p, Integral) and not isinstance(p, bool) for p in padding):
        padding = [int(p) for p in padding]
        if len(padding) == 2:
            px, py = padding
            padding = [px, px, py, py]
        return padding
    raise TypeError(f"{op}: padding must be an int, a pair [px, py] or four ints [x0, x1, y0, y1], got {padding!r}")


def check_factor(name: str, value, op: str = "upfirdn2d") -> int:
    """A positive integer resampling factor (``up``/``down``)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{op}: {name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value}")
    return int(value)


def check_filter(f, name: str = "f", op: str = "upfirdn2d") -> torch.Tensor | None:
    """Validate a FIR filter: None (identity), or a float32 tensor ``[taps]`` (separable) or ``[fh, fw]``
    (non-separable) that does not require grad (filters are fixed buffers, docs/algorithm.md "Filter design")."""
    if f is None:
        return None
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(f).__name__}")
    if f.dtype != torch.float32:
        raise TypeError(f"{op}: {name} must be a float32 tensor (see ops.setup_filter), got {f.dtype}")
    if f.ndim not in (1, 2):
        raise ValueError(f"{op}: {name} must be 1-D [taps] (separable) or 2-D [fh, fw], "
                         f"got shape {list(f.shape)}")
    if f.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {list(f.shape)}")
    if f.requires_grad:
        raise ValueError(f"{op}: {name} must not require grad (filters are fixed; they get no gradient)")
    return f


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


def check_input(x, op: str = "upfirdn2d") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{op}: x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got {x.dtype}")


def check_output_size(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                      op: str = "upfirdn2d", what: str = "padding") -> tuple[int, int]:
    """``(out_h, out_w)``; ValueError naming ``padding`` if an axis would have no output."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = padding
    in_h, in_w = x.shape[2], x.shape[3]
    for axis, n, p0, p1, taps in (("x", in_w, px0, px1, fw), ("y", in_h, py0, py1, fh)):
        if n * up + p0 + p1 < taps:
            raise ValueError(
                f"{op}: {what} {padding} leaves no output along {axis}: input size {n} * up {up} + padding "
                f"{p0} + {p1} = {n * up + p0 + p1} is smaller than the filter's {taps} taps")
    return output_size(in_h, up, down, py0, py1, fh), output_size(in_w, up, down, px0, px1, fw)


def check_gain(gain, op: str = "upfirdn2d") -> float:
    if isinstance(gain, bool) or not isinstance(gain, Real) or not math.isfinite(float(gain)):
        raise TypeError(f"{op}: gain must be a finite real number, got {gain!r}")
    return float(gain)


def adjoint_padding(in_h: int, in_w: int, out_h: int, out_w: int, fw: int, fh: int, up: int, down: int,
                    padding: list[int]) -> list[int]:
    """Padding of the upfirdn2d that is the adjoint (the gradient with respect to ``x``) of
    ``upfirdn2d(x [.., in_h, in_w], f [fh, fw], up, down, padding) -> [.., out_h, out_w]``.

    The adjoint runs with ``up`` and ``down`` swapped, the filter flip toggled and the same gain (docs/algorithm.md "Op: upfirdn2d").
    """
    px0, _, py0, _ = padding
    return [fw - px0 - 1, in_w * up - out_w * down + px0 - up + 1,
            fh - py0 - 1, in_h * up - out_h * down + py0 - up + 1]


def _pad_axis(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
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
        x = _pad_axis(_pad_axis(x, 3, px0, px1), 2, py0, py1).contiguous(memory_format=fmt)
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
    x = _pad_axis(_pad_axis(x, 3, xa, xb), 2, ya, yb).contiguous(memory_format=fmt)
    n = x.shape[0]
    qy, qx = x.shape[2] - ly + 1, x.shape[3] - lx + 1
    y = torch.empty(n, c, qy * uy, qx * ux, dtype=x.dtype, device=x.device, memory_format=fmt)
    for ry in range(uy):
        for rx in range(ux):
            y[:, :, ry::uy, rx::ux] = F.conv2d(x, w[ry, rx].repeat(c, 1, 1, 1), groups=c)
    return y[:, :, yoff:yoff + ylen:dy, xoff:xoff + xlen:dx]


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a CPU tensor stored channels-last (and not also plain contiguous), else contiguous."""
    if x.device.type == "cpu" and x.ndim == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def upfirdn2d_compute(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                      flip_filter: bool, gain: float) -> torch.Tensor:
    """The reference forward value (arguments validated), no autograd bookkeeping of its own."""
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


def adjoint_function(forward_value, name: str) -> type:
    """An autograd Function ``apply(x, f, up, down, padding, flip_filter, gain)`` whose forward is
    ``forward_value`` (same arguments) and whose gradient is the adjoint upfirdn2d (docs/algorithm.md "Op: upfirdn2d") computed by the
    Function itself, so every order of gradients works. Used by the reference and the Triton path alike."""

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


_Upfirdn2dRef = adjoint_function(upfirdn2d_compute, "Upfirdn2dRef")


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                  flip_filter: bool, gain: float) -> torch.Tensor:
    """Reference upfirdn2d (arguments validated): polyphase PyTorch convolutions; the gradient is the adjoint
    upfirdn2d through the same path (strided conv <-> polyphase conv, both fast), differentiable to any order."""
    return _Upfirdn2dRef.apply(x, f, up, down, list(padding), flip_filter, gain)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter and downsample, per channel (docs/algorithm.md "Op: upfirdn2d").

    Args:
        x: ``[N, C, H, W]`` float16/float32/float64 (bfloat16 on GPU).
        f: float32 filter ``[taps]`` (separable: applied along x, then y), ``[fh, fw]``, or None (identity).
        up: upsampling factor (zeros inserted after each sample), int >= 1.
        down: downsampling factor (every ``down``-th sample kept, starting at 0), int >= 1.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]`` in samples of the upsampled signal; negative crops.
        flip_filter: False = true convolution, True = correlation.
        gain: overall gain; the filter is multiplied by ``gain ** (f.ndim / 2)``.
        impl: 'auto' | 'ref' | 'triton'.

    Returns:
        ``[N, C, (H*up + y0 + y1 - fh) // down + 1, (W*up + x0 + x1 - fw) // down + 1]``, ``x``'s dtype,
        differentiable with respect to ``x`` to any order.
    """
    check_input(x)
    f = check_filter(f)
    up = check_factor("up", up)
    down = check_factor("down", down)
    padding = parse_padding(padding)
    gain = check_gain(gain)
    check_output_size(x, f, up, down, padding)
    if select_impl(impl, x, "upfirdn2d") == "triton":
        from ._triton.upfirdn2d import upfirdn2d_triton
        return upfirdn2d_triton(x, f, up, down, padding, bool(flip_filter), gain)
    return upfirdn2d_ref(x, f, up, down, padding, bool(flip_filter), gain)


def setup_filter(f, device=torch.device("cpu"), normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """Turn filter taps into the float32 tensor the ops expect (docs/algorithm.md "Op: upfirdn2d").

    Args:
        f: taps as a tensor, array or nested list: a scalar, ``[taps]`` or ``[fh, fw]``; None means ``[1]``.
        device: device of the result.
        normalize: scale so the taps sum to 1 (unit DC gain).
        flip_filter: flip the taps along every axis.
        gain: overall gain, applied as ``gain ** (ndim / 2)`` like upfirdn2d.
        separable: keep a 1-D filter 1-D (separable). None = separable iff 1-D with at least 8 taps; otherwise a
            1-D filter becomes 2-D by outer product (StyleGAN2's ``[1, 3, 3, 1]`` becomes a 4x4 kernel / 64).

    Returns:
        float32 ``[taps]`` or ``[fh, fw]`` on ``device``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2):
        raise ValueError(f"setup_filter: f must be a scalar, [taps] or [fh, fw], got shape {list(f.shape)}")
    if f.numel() == 0:
        raise ValueError("setup_filter: f must not be empty")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError(f"setup_filter: separable=True needs 1-D taps, got shape {list(f.shape)}")
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("setup_filter: normalize=True but the taps sum to 0")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (check_gain(gain, "setup_filter") ** (f.ndim / 2))
    return f.to(device=device)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding=0, flip_filter: bool = False, gain: float = 1,
             impl: str = "auto") -> torch.Tensor:
    """Filter without resampling; the size is kept (extra ``padding`` added on top). Shapes as upfirdn2d."""
    fw, fh = filter_size(check_filter(f, op="filter2d"))
    px0, px1, py0, py1 = parse_padding(padding, "filter2d")
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 2, padding=0, flip_filter: bool = False,
               gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by ``up`` with filter ``f`` (gain ``up**2`` restores DC): ``[N, C, H, W] -> [N, C, H*up, W*up]``
    plus any extra ``padding``."""
    up = check_factor("up", up, "upsample2d")
    fw, fh = filter_size(check_filter(f, op="upsample2d"))
    px0, px1, py0, py1 = parse_padding(padding, "upsample2d")
    p = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=check_gain(gain) * up * up, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: int = 2, padding=0, flip_filter: bool = False,
                 gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter and downsample by ``down``: ``[N, C, H, W] -> [N, C, H//down, W//down]`` (for sizes divisible by
    ``down``) plus any extra ``padding``."""
    down = check_factor("down", down, "downsample2d")
    fw, fh = filter_size(check_filter(f, op="downsample2d"))
    px0, px1, py0, py1 = parse_padding(padding, "downsample2d")
    p = [px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
