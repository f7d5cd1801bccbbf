"""Checks of the Triton upfirdn2d (ops/_triton/upfirdn2d.py) against the float64 definition and the reference
path; run in the kernel worker (tests/ops/kernel_worker.py) under TRITON_INTERPRET=1, or directly on CUDA."""

from __future__ import annotations

import torch

import ops
from ops.upfirdn2d import parse_padding
from tests.ops.ops_definition import SG3_LAYERS, layer_filters, upfirdn2d_def
from tests.ops.test_ops_ref import _random_case

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float16": dict(rtol=2e-3, atol=2e-3)}


def _compare(got: torch.Tensor, want: torch.Tensor, dtype: str, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    tol = TOL[dtype]
    torch.testing.assert_close(got.double().cpu(), want.double().cpu(), rtol=tol["rtol"],
                               atol=tol["atol"] * max(1.0, want.abs().max().item()), msg=lambda m: f"{what}: {m}")


def check_definition(up: int, down: int, kind: str, device: str = "cpu") -> None:
    """Random asymmetric filters, negative paddings, both flips, a gain: float64 exact, float32 within 1e-5; the
    output is NaN-poisoned first so an unwritten element fails."""
    from ops._triton.upfirdn2d import upfirdn2d_forward

    for flip in (False, True):
        x, f, pad, gain = _random_case(up, down, kind, seed=up * 100 + down * 10 + len(kind) + flip)
        want = upfirdn2d_def(x, f, up, down, pad, flip, gain)
        x = x.to(device)
        f = None if f is None else f.to(device)
        got = ops.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl="triton")
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
        poisoned = torch.full(want.shape, float("nan"), dtype=torch.float32, device=device)
        upfirdn2d_forward(x.float(), f, up, down, pad, flip, gain, out=poisoned)
        assert not poisoned.isnan().any(), "the kernel left elements unwritten"
        _compare(poisoned, want, "float32", f"up={up} down={down} {kind} flip={flip} pad={pad}")


def _model_calls():
    """The upfirdn2d calls of the models at reduced size: both halves of every StyleGAN3 layer configuration's
    filtered_lrelu (generic path) and the discriminator's [1, 3, 3, 1] blur / downsample (docs/algorithm.md "Resampling convolutions")."""
    calls = []
    for name, up, down, fu_t, fd_t, radial, pad, _, _, _, _, small in SG3_LAYERS:
        fu, fd = layer_filters(up, down, fu_t, fd_t, radial)
        calls.append((f"{name}-up", (2, 3, small, small + 1), fu, dict(up=up, padding=pad, gain=up * up)))
        mid = small * up + pad[0] + pad[1] - (fu_t - 1)
        calls.append((f"{name}-down", (2, 3, mid, mid), fd, dict(down=down)))
    blur = ops.setup_filter([1, 3, 3, 1])
    calls.append(("D-conv-blur", (2, 3, 8, 8), blur, dict(padding=2)))
    calls.append(("D-skip-down", (2, 3, 8, 8), blur, dict(down=2, padding=1)))
    return calls


def check_model_calls(dtype: str, device: str = "cpu") -> None:
    """Every model call: forward vs the float64 definition (fp32 within 1e-5, fp16 within fp16 rounding)."""
    gen = torch.Generator().manual_seed(11)
    for name, shape, f, kw in _model_calls():
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        want = upfirdn2d_def(x, f, kw.get("up", 1), kw.get("down", 1), parse_padding(kw.get("padding", 0)), False,
                             kw.get("gain", 1))
        xd = x.to(device=device, dtype=getattr(torch, dtype))
        got = ops.upfirdn2d(xd, None if f is None else f.to(device), impl="triton", **kw)
        assert got.dtype == xd.dtype
        _compare(got, want, dtype, name)


def check_grads(dtype: str, device: str = "cpu") -> None:
    """dx, and the second-order term R1 needs (the gradient of dx with respect to the incoming gradient, which
    runs the backward's backward), vs the reference in float64, for the model calls."""
    gen = torch.Generator().manual_seed(12)
    for name, shape, f, kw in _model_calls()[::3]:
        x0 = torch.randn(shape, generator=gen, dtype=torch.float64)
        y_shape = ops.upfirdn2d(x0, f, impl="ref", **kw).shape
        w0 = torch.randn(y_shape, generator=gen, dtype=torch.float64)
        v0 = torch.randn(shape, generator=gen, dtype=torch.float64)
        res = {}
        for impl, cast in (("triton", lambda t: t.to(device=device, dtype=getattr(torch, dtype))),
                           ("ref", lambda t: t)):
            x = cast(x0).requires_grad_(True)
            w = cast(w0).requires_grad_(True)
            fd = None if f is None else f.to(x.device)
            y = ops.upfirdn2d(x, fd, impl=impl, **kw)
            (dx,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
            (dw,) = torch.autograd.grad((dx * cast(v0)).sum(), w)
            res[impl] = (dx, dw)
        _compare(res["triton"][0], res["ref"][0], dtype, f"{name} dx")
        _compare(res["triton"][1], res["ref"][1], dtype, f"{name} d(dx)/d(dy)")


def check_gradcheck(device: str = "cpu") -> None:
    """gradcheck and gradgradcheck in float64 through the Triton path at tiny shapes."""
    cases = [(2, 1, torch.tensor([1.0, 2.0, 4.0]), [2, 1, 1, 2], False),
             (1, 2, torch.tensor([[1.0, 2.0], [3.0, 5.0]]), [1, 0, 0, 1], True),
             (2, 2, torch.tensor([1.0, 3.0, 2.0, 1.0]), [-1, 3, 2, -2], False),
             (4, 1, torch.tensor([1.0, 2.0, 3.0, 4.0]), [0, -2, -1, 0], True)]
    for up, down, f, pad, flip in cases:
        x = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
        f = f.to(device)
        fn = lambda x_: ops.upfirdn2d(x_, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.7,  # noqa
                                      impl="triton")
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)
