"""Checks of the Triton bias_act (ops/_triton/bias_act.py) against the reference path; run in the kernel worker
(tests/ops/kernel_worker.py) under TRITON_INTERPRET=1, or directly on a CUDA device."""

from __future__ import annotations

import torch

import ops
from ops.bias_act import ACTIVATIONS

# fp32 within 1e-5 relative (atol guards values near 0); fp16 within fp16 rounding of the output.
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float16": dict(rtol=2e-3, atol=2e-3),
       "float64": dict(rtol=1e-12, atol=1e-12)}


def _inputs(dtype: str, device: str, seed: int, shape=(2, 3, 5, 7), dim=1):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 2).to(device=device, dtype=getattr(torch, dtype))
    b = torch.randn(shape[dim], generator=gen).to(device=device, dtype=getattr(torch, dtype))
    return x, b


def check_forward(act: str, dtype: str, device: str = "cpu") -> None:
    """Forward vs the reference in float64, for bias along dim 1 and the last dim, no bias, with and without
    clamp; the output buffer is NaN-poisoned first so an unwritten element fails."""
    from ops._triton.bias_act import _launch

    spec = ACTIVATIONS[act]
    for seed, (dim, clamp, alpha, gain) in enumerate([(1, None, None, None), (3, 0.8, 0.3, 1.7), (None, 2.0, None, 0.5)]):
        x, b = _inputs(dtype, device, seed, dim=dim or 1)
        b = None if dim is None else b
        dim_ = dim or 1
        if b is not None:  # near-zero inputs, where expm1/tanh/log1p series take over
            x.view(-1)[:4] = torch.tensor([1e-3, -1e-3, -0.04, 0.0], dtype=x.dtype) - b[0]
        want = ops.bias_act(x.double(), None if b is None else b.double(), dim=dim_, act=act, alpha=alpha, gain=gain,
                            clamp=clamp, impl="ref")
        got = ops.bias_act(x, b, dim=dim_, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="triton")
        assert got.dtype == x.dtype and got.shape == x.shape
        torch.testing.assert_close(got.double(), want, **TOL[dtype])
        poisoned = torch.full_like(x, float("nan"))
        _launch(0, x, b, None, dim_, act, spec.def_alpha if alpha is None else alpha,
                spec.def_gain if gain is None else gain, clamp, out=poisoned)
        assert not poisoned.isnan().any(), "the kernel left elements unwritten"
        torch.testing.assert_close(poisoned, got, rtol=0, atol=0)
    flat = x.flatten()  # no bias: dim is not used (may exceed the rank)
    torch.testing.assert_close(ops.bias_act(flat, act=act, impl="triton").double(),
                               ops.bias_act(flat.double(), act=act, impl="ref"), **TOL[dtype])


def check_grads(act: str, dtype: str, device: str = "cpu") -> None:
    """First and second order gradients wrt x and b vs the reference (computed in float64)."""
    x0, b0 = _inputs(dtype, device, 7)
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8)).to(device)
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9)).to(device)
    results = {}
    for impl, cast in (("triton", lambda t: t), ("ref", lambda t: t.double())):
        x = cast(x0).detach().requires_grad_(True)
        b = cast(b0).detach().requires_grad_(True)
        y = ops.bias_act(x, b, act=act, clamp=1.5, impl=impl)
        dx, db = torch.autograd.grad((y * cast(w).to(y.dtype)).sum(), [x, b], create_graph=True)
        target = (dx * cast(v).to(dx.dtype)).sum() + db.sum()
        # (the reference's first derivative of a piecewise-linear activation does not depend on x at all)
        ddx, ddb = torch.autograd.grad(target, [x, b], allow_unused=True) if target.requires_grad else (None, None)
        ddx = torch.zeros_like(x) if ddx is None else ddx
        ddb = torch.zeros_like(b) if ddb is None else ddb
        results[impl] = [t.double() for t in (dx, db, ddx, ddb)]
    tol = TOL[dtype]
    for name, got, want in zip(("dx", "db", "ddx", "ddb"), results["triton"], results["ref"]):
        scale = want.abs().max().item() + 1e-30
        # db sums many fp16 products: compare relative to its magnitude
        torch.testing.assert_close(got, want, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale),
                                   msg=lambda m: f"{act} {dtype} {name}: {m}")


def check_gradcheck(act: str, device: str = "cpu") -> None:
    """gradcheck and gradgradcheck in float64 through the Triton path at a tiny shape."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(1, 3, 2, generator=gen, dtype=torch.float64) * 1.5).to(device).requires_grad_(True)
    b = torch.randn(3, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    fn = lambda x_, b_: ops.bias_act(x_, b_, act=act, clamp=1.5, impl="triton")  # noqa: E731
    # fast_mode checks random projections of the Jacobians: each interpreted launch costs tens of ms
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


def check_env_override() -> None:
    """STYLEGAN3_OPS_IMPL=triton sends impl='auto' to the kernels (here: the interpreter), =ref to the reference."""
    import os

    x = torch.randn(2, 3, requires_grad=True)
    os.environ["STYLEGAN3_OPS_IMPL"] = "triton"
    try:
        assert "BiasAct" in type(ops.bias_act(x, act="tanh").grad_fn).__name__
        assert "Upfirdn2dTriton" in type(ops.upfirdn2d(x[None, None], None).grad_fn).__name__
        os.environ["STYLEGAN3_OPS_IMPL"] = "ref"
        assert "BiasAct" not in type(ops.bias_act(x, act="tanh").grad_fn).__name__
        assert "Upfirdn2dRef" in type(ops.upfirdn2d(x[None, None], None).grad_fn).__name__
    finally:
        del os.environ["STYLEGAN3_OPS_IMPL"]
