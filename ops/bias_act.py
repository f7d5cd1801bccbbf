"""Fused bias + activation + gain + clamp (docs/algorithm.md "Op: bias_act").

``y = clamp(act(x + b broadcast along dim, alpha) * gain, -clamp, +clamp)``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from ._dispatch import select_impl


@dataclass(frozen=True)
class Activation:
    """An activation of docs/algorithm.md "Op: bias_act" with its default ``alpha`` (used by 'lrelu' only) and ``gain``."""
    name: str
    def_alpha: float
    def_gain: float


# Defaults per activation, docs/algorithm.md "Op: bias_act" (alpha is used by 'lrelu' only).
ACTIVATIONS = {
    "linear": Activation("linear", 0.0, 1.0),
    "relu": Activation("relu", 0.0, math.sqrt(2)),
    "lrelu": Activation("lrelu", 0.2, math.sqrt(2)),
    "tanh": Activation("tanh", 0.0, 1.0),
    "sigmoid": Activation("sigmoid", 0.0, 1.0),
    "elu": Activation("elu", 0.0, 1.0),
    "selu": Activation("selu", 0.0, 1.0),
    "softplus": Activation("softplus", 0.0, 1.0),
    "swish": Activation("swish", 0.0, math.sqrt(2)),
}


def check_real(name: str, value, op: str, allow_none: bool = False, nonneg: bool = False) -> float | None:
    """A finite real number (or None if ``allow_none``) as float; TypeError/ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{op}: {name} must be a real number{' or None' if allow_none else ''}, "
                        f"got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (nonneg and value < 0):
        raise ValueError(f"{op}: {name} must be a finite{' non-negative' if nonneg else ''} number, got {value}")
    return value


def check_bias(b, x: torch.Tensor, dim: int, op: str) -> None:
    """``b`` must be a floating-point ``[x.shape[dim]]`` tensor on ``x``'s device (``dim`` non-negative)."""
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{op}: b must be a torch.Tensor or None, got {type(b).__name__}")
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"{op}: b must be 1-D with x.shape[{dim}] = {x.shape[dim]} elements, "
                         f"got shape {list(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"{op}: b must be a floating-point tensor, got {b.dtype}")
    if b.device != x.device:
        raise ValueError(f"{op}: b is on {b.device} but x is on {x.device}")


def resolve_args(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha, gain, clamp):
    """Validate the arguments of :func:`bias_act`; returns ``(dim, Activation, alpha, gain, clamp)`` with the
    per-activation defaults filled in and ``dim`` made non-negative."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"bias_act: x must be a floating-point tensor, got {x.dtype}")
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = check_real("alpha", alpha, "bias_act", allow_none=True)
    gain = check_real("gain", gain, "bias_act", allow_none=True)
    clamp = check_real("clamp", clamp, "bias_act", allow_none=True, nonneg=True)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"bias_act: dim must be an int, got {type(dim).__name__}")
    if b is not None:
        if x.ndim == 0:
            raise ValueError("bias_act: x must have at least one dimension when a bias b is given")
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(f"bias_act: dim={dim} is out of range for x of shape {list(x.shape)}")
        dim = dim % x.ndim
        check_bias(b, x, dim, "bias_act")
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    return dim, spec, alpha, gain, clamp


def activation_ref(x: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    """The plain activation functions of docs/algorithm.md "Op: bias_act", differentiable by autograd to any order."""
    if act == "linear":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "lrelu":
        return F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "elu":
        return F.elu(x)
    if act == "selu":
        return F.selu(x)
    if act == "softplus":
        return F.softplus(x)
    if act == "swish":
        return torch.sigmoid(x) * x
    raise ValueError(f"unknown activation {act!r}")


def bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    """Reference path: add, activation, multiply, clamp; gradients by autograd (any order).

    Arguments are already validated (see :func:`resolve_args`); ``b`` is cast to ``x.dtype``.
    """
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = activation_ref(x, act, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = "auto") -> torch.Tensor:
    """Fused bias, activation, gain and clamp (docs/algorithm.md "Op: bias_act").

    Args:
        x: input tensor of any shape, float16/float32/float64 (bfloat16 on GPU).
        b: bias, 1-D with ``x.shape[dim]`` elements, or None; added along ``dim`` (cast to ``x.dtype``).
        dim: the dimension of ``x`` that ``b`` runs along (default 1, the channel axis of ``[N, C, H, W]``).
        act: one of 'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'.
        alpha: slope of 'lrelu' for negative inputs (default 0.2); ignored by the other activations.
        gain: factor applied after the activation; None = the activation's default (sqrt(2) for relu, lrelu
            and swish, 1 otherwise).
        clamp: if not None, the output is clamped to ``[-clamp, +clamp]``.
        impl: 'auto' | 'ref' | 'cpu' | 'triton' (docs/ops.md "Backends"); 'cpu' is the reference (nothing
            to gain on the CPU over PyTorch's elementwise ops).

    Returns:
        A tensor of ``x``'s shape and dtype, differentiable to any order with respect to ``x`` and ``b``.
    """
    dim, spec, alpha, gain, clamp = resolve_args(x, b, dim, act, alpha, gain, clamp)
    if select_impl(impl, x, "bias_act") == "triton":
        # imported on first use: Triton reads TRITON_INTERPRET when its kernels are decorated (ops/_dispatch.py)
        from ._triton.bias_act import bias_act_triton
        return bias_act_triton(x, b, dim, spec.name, alpha, gain, clamp)
    return bias_act_ref(x, b, dim, spec.name, alpha, gain, clamp)
