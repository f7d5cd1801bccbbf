"""Upsample, FIR-filter, downsample: ``upfirdn2d`` and its helpers (docs/algorithm.md "Op: upfirdn2d").

Per channel, in this order: insert ``up - 1`` zeros after each sample; pad by ``[x0, x1, y0, y1]`` (negative
values crop); convolve in "valid" mode with the filter (true convolution unless ``flip_filter``); keep every
``down``-th sample starting at index 0. Output size per axis: ``(in * up + p0 + p1 - taps) // down + 1``.

This module holds the argument checks, the reference (these four steps as written: the test oracle), the
dispatch and the resampling helpers. The CPU path (polyphase, channels-last) is ops/_cpu/upfirdn2d.py, the Triton
kernels ops/_triton/upfirdn2d.py. Every backend's gradient is the adjoint upfirdn2d (ops/_common.py).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F

from ._common import adjoint_function, adjoint_padding, filter_size, output_size, pad_axis
from ._cpu.upfirdn2d import upfirdn2d_cpu
from ._dispatch import select_impl

# the shape arithmetic and the adjoint live in ops/_common.py, shared with ops/_cpu and ops/_triton (no import cycle)
__all__ = ["upfirdn2d", "upfirdn2d_ref", "setup_filter", "filter2d", "upsample2d", "downsample2d", "parse_padding",
           "check_factor", "check_filter", "check_input", "check_gain", "check_output_size", "filter_size",
           "output_size", "adjoint_padding", "adjoint_function"]


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


def upfirdn2d_value(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                    flip_filter: bool, gain: float) -> torch.Tensor:
    """The definition's forward value, step by step (arguments validated): zero insertion, pad/crop, depthwise
    convolution at the upsampled rate (a separable filter as a pass along x, then one along y), decimation.
    Written for reading, not for speed."""
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32)
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    kernels = [f[None, :], f[:, None]] if f.ndim == 1 else [f]  # [1, taps] along x, [taps, 1] along y
    x0, x1, y0, y1 = padding
    # 1. zero insertion: sample k lands at k * up
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    # 2. pad (negative values crop)
    x = pad_axis(pad_axis(x, 3, x0, x1), 2, y0, y1)
    # 3. valid true convolution (conv2d correlates, so the filter is flipped unless flip_filter), per channel
    for k in kernels:
        k = k if flip_filter else k.flip([0, 1])
        x = F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)
    # 4. decimation
    return x[:, :, ::down, ::down]


_Upfirdn2dRef = adjoint_function(upfirdn2d_value, "Upfirdn2dRef")


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: list[int],
                  flip_filter: bool, gain: float) -> torch.Tensor:
    """The reference upfirdn2d (arguments validated): the definition's value (upfirdn2d_value), and as its
    gradient the adjoint upfirdn2d (docs/algorithm.md "Op: upfirdn2d"), by the same code; any order."""
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
        impl: 'auto' | 'ref' | 'cpu' | 'triton' (docs/ops.md "Backends").

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
    impl = select_impl(impl, x, "upfirdn2d")
    if impl == "triton":
        # imported on first use: Triton reads TRITON_INTERPRET when its kernels are decorated (ops/_dispatch.py)
        from ._triton.upfirdn2d import upfirdn2d_triton
        return upfirdn2d_triton(x, f, up, down, padding, bool(flip_filter), gain)
    if impl == "cpu":
        return upfirdn2d_cpu(x, f, up, down, padding, bool(flip_filter), gain)
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
