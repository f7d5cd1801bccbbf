"""The PyTorch backends of the ops -- the reference (impl='ref', the definitions) and the CPU path (impl='cpu',
ops/_cpu) -- against independent float64 constructions of their definitions (docs/algorithm.md "Ops"), gradients
by gradcheck/gradgradcheck, argument validation and dispatch (docs/ops.md "Backends")."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.bias_act import ACTIVATIONS
from ops.filtered_lrelu import output_shape
from tests.ops.ops_definition import SG3_LAYERS, filtered_lrelu_def, graph_nodes, layer_filters, upfirdn2d_def

# The two PyTorch backends: every definition test runs on both.
TORCH_IMPLS = ["ref", "cpu"]


def _random_case(up, down, kind, seed):
    """Random asymmetric filter, non-square input and a padding (possibly negative) that leaves output."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    if kind == "sep":
        f = torch.rand(rng.randint(2, 7), generator=gen) + 0.1
    elif kind == "2d":
        f = torch.rand(rng.randint(2, 5), rng.randint(2, 6), generator=gen) + 0.1
    else:
        f = None
    fw, fh = (1, 1) if f is None else ((f.shape[0],) * 2 if f.ndim == 1 else (f.shape[1], f.shape[0]))
    h, w = rng.randint(4, 7), rng.randint(5, 8)
    while True:
        pad = [rng.randint(-4, 6) for _ in range(4)]
        if w * up + pad[0] + pad[1] >= fw and h * up + pad[2] + pad[3] >= fh:
            break
    x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    return x, f, pad, rng.uniform(0.5, 3.0)


@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("up,down,kind,flip", list(itertools.product([1, 2, 4], [1, 2, 4], ["sep", "2d", "none"],
                                                                      [False, True])))
def test_upfirdn2d_ref_matches_definition(up, down, kind, flip, impl):
    x, f, pad, gain = _random_case(up, down, kind, seed=up * 100 + down * 10 + len(kind) + flip)
    want = upfirdn2d_def(x, f, up, down, pad, flip, gain)
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl)
    assert got.shape == want.shape
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got32 = ops.upfirdn2d(x.float(), f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl)
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_flip_filter_and_convolution_orientation(impl):
    # An impulse through an asymmetric filter: true convolution reproduces the taps in order, correlation reversed.
    x = torch.zeros(1, 1, 1, 5, dtype=torch.float64)
    x[..., 2] = 1
    f = torch.tensor([[1.0, 2.0, 3.0]])
    conv = ops.upfirdn2d(x, f, padding=[2, 0, 0, 0], impl=impl)[0, 0, 0]
    corr = ops.upfirdn2d(x, f, padding=[2, 0, 0, 0], flip_filter=True, impl=impl)[0, 0, 0]
    torch.testing.assert_close(conv, torch.tensor([0.0, 0, 1, 2, 3], dtype=torch.float64))
    torch.testing.assert_close(corr, torch.tensor([0.0, 0, 3, 2, 1], dtype=torch.float64))


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_gain_convention_separable_equals_2d(impl):
    # gain ** (f.ndim / 2): a [taps] filter and its outer product [taps, taps] give the same total gain.
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    a = ops.upfirdn2d(x, f, up=2, padding=2, gain=4, impl=impl)
    b = ops.upfirdn2d(x, torch.outer(f, f), up=2, padding=2, gain=4, impl=impl)
    torch.testing.assert_close(a, b)
    # zero insertion after each sample: with an identity filter, sample k lands at k * up
    y = ops.upfirdn2d(x, None, up=2, impl=impl)
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[:, :, ::2, ::2], x)
    assert y[:, :, 1::2].abs().max() == 0 and y[:, :, :, 1::2].abs().max() == 0


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_padding_entirely_outside_the_data_gives_zeros_with_a_gradient(impl):
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = ops.upfirdn2d(x, torch.ones(2), up=2, padding=[-10, 12, 0, 0], impl=impl)
    want = upfirdn2d_def(x.detach(), torch.ones(2), up=2, padding=[-10, 12, 0, 0])
    assert y.shape == want.shape and y.abs().max() == 0
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.abs().max() == 0


@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("row", SG3_LAYERS, ids=[r[0] for r in SG3_LAYERS])
def test_filtered_lrelu_ref_stylegan3_layers(row, impl):
    name, up, down, fu_taps, fd_taps, radial, pad, gain, slope, in_size, out_size, small = row
    fu, fd = layer_filters(up, down, fu_taps, fd_taps, radial)
    # the table's full-size input gives the table's output size
    assert output_shape(torch.empty(1, 1, in_size, in_size), fu, fd, up, down, pad) == (out_size, out_size)
    gen = torch.Generator().manual_seed(hash(name) % 1000)
    x = torch.randn(2, 3, small, small + 1, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    for clamp in (None, 0.7):
        want = filtered_lrelu_def(x, fu, fd, b, up, down, pad, gain, slope, clamp)
        got = ops.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=pad, gain=gain, slope=slope, clamp=clamp,
                                 impl=impl)
        assert got.shape == want.shape == (2, 3, *output_shape(x, fu, fd, up, down, pad))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        got32 = ops.filtered_lrelu(x.float(), fu, fd, b.float(), up=up, down=down, padding=pad, gain=gain,
                                   slope=slope, clamp=clamp, impl=impl)
        torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_filtered_lrelu_flip_filter_and_asymmetric_filters(impl):
    gen = torch.Generator().manual_seed(3)
    fu, fd = torch.rand(4, generator=gen) + 0.1, torch.rand(3, 5, generator=gen) + 0.1
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64)
    for flip in (False, True):
        want = filtered_lrelu_def(x, fu, fd, None, 2, 2, [3, 1, 2, -1], 1.3, 0.1, 2.0, flip)
        got = ops.filtered_lrelu(x, fu, fd, None, up=2, down=2, padding=[3, 1, 2, -1], gain=1.3, slope=0.1, clamp=2.0,
                                 flip_filter=flip, impl=impl)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _bias_act_def(x, b, dim, act, alpha, gain, clamp):
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    y = {"linear": lambda v: v, "relu": lambda v: torch.where(v > 0, v, 0 * v),
         "lrelu": lambda v: torch.where(v > 0, v, alpha * v), "tanh": torch.tanh,
         "sigmoid": lambda v: 1 / (1 + torch.exp(-v)),
         "elu": lambda v: torch.where(v > 0, v, torch.exp(v) - 1),
         "selu": lambda v: 1.0507009873554804934193349852946 * torch.where(
             v > 0, v, 1.6732632423543772848170429916717 * (torch.exp(v) - 1)),
         "softplus": lambda v: torch.log1p(torch.exp(v)), "swish": lambda v: v / (1 + torch.exp(-v))}[act](x) * gain
    return y if clamp is None else y.clamp(-clamp, clamp)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_ref_definition_and_grads(act):
    gen = torch.Generator().manual_seed(len(act))
    x = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ops.bias_act(x, b, act=act, impl="ref"), _bias_act_def(x, b, 1, act, None, None, None))
    torch.testing.assert_close(ops.bias_act(x, b[:4].new_ones(4), dim=-1, act=act, alpha=0.3, gain=0.7, clamp=0.5,
                                            impl="ref"),
                               _bias_act_def(x, b.new_ones(4), 2, act, 0.3, 0.7, 0.5))
    xs = x[:1, :2, :3].clone().requires_grad_(True)
    bs = b[:2].clone().requires_grad_(True)
    fn = lambda x_, b_: ops.bias_act(x_, b_, act=act, clamp=1.5, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xs, bs))
    assert torch.autograd.gradgradcheck(fn, (xs, bs))


def test_bias_act_defaults():
    x = torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(ops.bias_act(x, dim=0, act="lrelu"), torch.tensor([-0.2, 2.0]) * math.sqrt(2))
    torch.testing.assert_close(ops.bias_act(x, dim=0), x)
    torch.testing.assert_close(ops.bias_act(x, dim=0, act="relu", clamp=2.0), torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("up,down,f,pad,flip", [
    (2, 1, torch.tensor([1.0, 2.0, 4.0]), [2, 1, 1, 2], False),
    (1, 2, torch.tensor([[1.0, 2.0], [3.0, 5.0]]), [1, 0, 0, 1], True),
    (2, 2, torch.tensor([1.0, 3.0, 2.0, 1.0]), [-1, 3, 2, -2], False),
    (4, 1, torch.tensor([1.0, 2.0, 3.0, 4.0]), [0, -2, -1, 0], True),
])
def test_upfirdn2d_ref_gradcheck(up, down, f, pad, flip, impl):
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda x_: ops.upfirdn2d(x_, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.7, impl=impl)  # noqa
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_filtered_lrelu_ref_gradcheck(impl):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    fu, fd = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8, torch.tensor([[1.0, 2.0], [2.0, 3.0]]) / 8
    fn = lambda x_, b_: ops.filtered_lrelu(x_, fu, fd, b_, up=2, down=2, padding=[2, 1, 1, 2], clamp=0.9,  # noqa
                                           impl=impl)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    g = ops.setup_filter(torch.arange(1.0, 13.0), gain=4, flip_filter=True)
    assert g.shape == (12,)
    torch.testing.assert_close(g, torch.arange(12.0, 0.0, -1.0) / 78 * 2)
    assert ops.setup_filter([1, 2], separable=True).shape == (2,)
    assert ops.setup_filter(None).shape == (1, 1)
    assert ops.setup_filter(torch.ones(12), separable=False).shape == (12, 12)


@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("f", [torch.tensor([1.0, 3.0, 3.0, 1.0]), ops.setup_filter([1, 3, 3, 1]),
                               torch.tensor([1.0, 2.0, 5.0])])
def test_resampling_helpers(f, impl):
    fw = f.shape[-1]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = ops.filter2d(x, f, impl=impl)
    assert y.shape == x.shape
    torch.testing.assert_close(y, upfirdn2d_def(x, f, padding=[fw // 2, (fw - 1) // 2] * 2))
    u = ops.upsample2d(x, f, impl=impl)
    assert u.shape == (2, 3, 16, 16)
    torch.testing.assert_close(u, upfirdn2d_def(x, f, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2] * 2, gain=4))
    d = ops.downsample2d(x, f, impl=impl)
    assert d.shape == (2, 3, 4, 4)
    torch.testing.assert_close(d, upfirdn2d_def(x, f, down=2, padding=[(fw - 1) // 2, (fw - 2) // 2] * 2))
    if fw == 4:
        # [1, 3, 3, 1]'s two polyphase components each sum to 1/2: with gain up**2 a constant stays constant
        c = torch.full((1, 1, 8, 8), 2.0, dtype=torch.float64)
        torch.testing.assert_close(ops.upsample2d(c, f / f.sum(), impl=impl)[..., 4:-4, 4:-4],
                                   torch.full((1, 1, 8, 8), 2.0, dtype=torch.float64))


def test_argument_errors():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(TypeError, match="f must be a float32"):
        ops.upfirdn2d(x, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"f must be 1-D \[taps\]"):
        ops.upfirdn2d(x, torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="f must not require grad"):
        ops.upfirdn2d(x, torch.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="up must be a positive int"):
        ops.upfirdn2d(x, None, up=0)
    with pytest.raises(TypeError, match="down must be a positive int"):
        ops.upfirdn2d(x, None, down=1.5)
    with pytest.raises(ValueError, match="padding .* leaves no output along x"):
        ops.upfirdn2d(x, torch.ones(4), padding=[-3, -3, 0, 0])
    with pytest.raises(TypeError, match="padding must be"):
        ops.upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        ops.upfirdn2d(x[0], None)
    with pytest.raises(ValueError, match=r"b must be 1-D with x.shape\[1\] = 2"):
        ops.filtered_lrelu(x, b=torch.zeros(3))
    with pytest.raises(ValueError, match=r"b must be 1-D with x.shape\[1\] = 2"):
        ops.bias_act(x, torch.zeros(3))
    with pytest.raises(TypeError, match="fd must be a float32"):
        ops.filtered_lrelu(x, fd=torch.ones(4, dtype=torch.float16))
    with pytest.raises(ValueError, match="padding .* leaves no output along y"):
        ops.filtered_lrelu(x, torch.ones(12), torch.ones(12), up=2, padding=[9, 8, -9, -8])
    with pytest.raises(ValueError, match="act must be one of"):
        ops.bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="clamp must be a finite non-negative"):
        ops.bias_act(x, clamp=-1.0)
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.bias_act(x, impl="cuda")


def test_dispatch(monkeypatch):
    x = torch.randn(1, 2, 4, 4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("STYLEGAN3_OPS_IMPL", raising=False)
    # 'auto' on a CPU tensor is the CPU path; 'ref' and 'cpu' are taken as asked
    xg = x.clone().requires_grad_(True)
    assert "Upfirdn2dCpuBackward" in graph_nodes(ops.upfirdn2d(xg, None, up=2))
    assert "Upfirdn2dCpuBackward" in graph_nodes(ops.upfirdn2d(xg, None, up=2, impl="cpu"))
    assert "Upfirdn2dRefBackward" in graph_nodes(ops.upfirdn2d(xg, None, up=2, impl="ref"))
    fu = torch.ones(4) / 4
    assert "_CorrelateBackward" in graph_nodes(ops.filtered_lrelu(xg, fu, fu, up=2, down=2, padding=3))
    assert "_CorrelateBackward" not in graph_nodes(ops.filtered_lrelu(xg, fu, fu, up=2, down=2, padding=3,
                                                                       impl="ref"))
    for call in (lambda: ops.bias_act(x, impl="triton"), lambda: ops.upfirdn2d(x, None, impl="triton"),
                 lambda: ops.filtered_lrelu(x, impl="triton")):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            call()
    monkeypatch.setenv("STYLEGAN3_OPS_IMPL", "triton")  # forces 'auto' to Triton: on CPU that is the same error
    with pytest.raises(RuntimeError, match="STYLEGAN3_OPS_IMPL"):
        ops.upfirdn2d(x, None)
    torch.testing.assert_close(ops.upfirdn2d(x, None, impl="ref"), x)  # an explicit impl wins over the variable
    monkeypatch.setenv("STYLEGAN3_OPS_IMPL", "fast")
    with pytest.raises(ValueError, match="STYLEGAN3_OPS_IMPL='fast'"):
        ops.bias_act(x)
    monkeypatch.setenv("STYLEGAN3_OPS_IMPL", "ref")
    torch.testing.assert_close(ops.bias_act(x, act="relu", gain=1), F.relu(x))
    assert "Upfirdn2dRefBackward" in graph_nodes(ops.upfirdn2d(xg, None, up=2))     # the variable steers 'auto'
    assert "Upfirdn2dCpuBackward" in graph_nodes(ops.upfirdn2d(xg, None, up=2, impl="cpu"))  # not an explicit impl
    # the convolutions have no Triton kernel: 'triton' is their GPU path (the reference), with no interpreter check
    monkeypatch.setenv("STYLEGAN3_OPS_IMPL", "triton")
    w = torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(ops.conv2d(x, w, 1, gain=0.5), F.conv2d(x, w * 0.5, padding=1))
    with pytest.raises(ValueError, match="modulated_conv2d: impl must be one of"):
        ops.modulated_conv2d(x, w, torch.ones(1, 2), impl="gpu")


@pytest.mark.parametrize("slope,gain,clamp", [(0.2, math.sqrt(2), None), (0.2, math.sqrt(2), 1.5), (1.0, 1.0, 0.7),
                                              (0.0, 3.0, 2.0)])
def test_filtered_lrelu_fused_activation_equals_bias_act(slope, gain, clamp):
    # filtered_lrelu's CPU path (where the phase domain does not apply) runs lrelu * gain, clamp as one in-place
    # autograd Function: the same
    # values and gradients as bias_act_ref, at the kink (x = 0) and at the clamp bounds too.
    from ops._cpu.filtered_lrelu import _LreluGainClamp
    from ops.bias_act import bias_act_ref

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64) * 3
    if clamp is not None:
        x[0, 0, 0, :3] = torch.tensor([0.0, clamp / gain, -clamp / gain])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = _LreluGainClamp.apply(a, slope, gain, clamp), bias_act_ref(b, None, 1, "lrelu", slope, gain, clamp)
    assert torch.equal(ya, yb)
    g = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
    (ga,), (gb,) = torch.autograd.grad(ya, a, g), torch.autograd.grad(yb, b, g)
    torch.testing.assert_close(ga, gb, rtol=1e-14, atol=1e-14)
    smooth = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda t: _LreluGainClamp.apply(t, slope, gain, clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (smooth,))
    assert torch.autograd.gradgradcheck(fn, (smooth,))


@pytest.mark.parametrize("up,down", [(2, 2), (4, 2), (2, 1), (4, 4), (3, 1), (4, 1), (3, 3)])
def test_filtered_lrelu_phase_domain_matches_definition(up, down):
    # On CPU, layers with down | up and separable filters run phase by phase (ops/_cpu/filtered_lrelu.py): random
    # asymmetric filters (so flip_filter matters), identity filters, random (also negative) paddings, clamps.
    from ops._cpu.filtered_lrelu import phase_domain_applies

    rng = random.Random(up * 10 + down)
    gen = torch.Generator().manual_seed(up * 10 + down)
    for case in range(6):
        fu = None if case == 4 else torch.rand(rng.randint(1, 3 * up + 2), generator=gen) + 0.1
        fd = None if case == 5 else torch.rand(rng.randint(1, 3 * down + 4), generator=gen) + 0.1
        tu, td = (1 if fu is None else len(fu)), (1 if fd is None else len(fd))
        h, w = rng.randint(3, 7), rng.randint(3, 8)
        while True:
            pad = [rng.randint(-4, 8) for _ in range(4)]
            if w * up + pad[0] + pad[1] - (tu - 1) >= td and h * up + pad[2] + pad[3] - (tu - 1) >= td:
                break
        x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64) * 2
        b = torch.randn(3, generator=gen, dtype=torch.float64)
        gain, slope = rng.uniform(0.5, 2.0), rng.choice([0.0, 0.2, 1.0])
        assert phase_domain_applies(x, fu, fd, up, down, gain, slope)
        for clamp in (None, 0.8):
            for flip in (False, True):
                want = filtered_lrelu_def(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip)
                got = ops.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=pad, gain=gain, slope=slope,
                                         clamp=clamp, flip_filter=flip, impl="cpu")
                assert got.shape == want.shape, (case, pad)
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_filtered_lrelu_phase_domain_gradients_and_path_choice():
    from ops._cpu.filtered_lrelu import phase_domain_applies

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    fu, fd = torch.tensor([1.0, 3.0, 2.0, 1.0]) / 7, torch.tensor([1.0, 2.0, 4.0]) / 7
    fn = lambda x_, b_, impl="cpu": ops.filtered_lrelu(x_, fu, fd, b_, up=4, down=2, padding=[2, 1, -1, 3],  # noqa
                                                       clamp=0.9, impl=impl)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    # the phase path is taken only where it applies (on the CPU path, CPU tensors); the reference computes the
    # same values by the definition
    assert not phase_domain_applies(x, fu, torch.outer(fd, fd), 2, 2, 1.0, 0.2)   # 2-D fd (config R)
    assert not phase_domain_applies(x, fu, fd, 2, 4, 1.0, 0.2)                    # down does not divide up
    assert not phase_domain_applies(x, fu, fd, 2, 2, -1.0, 0.2)                   # negative gain
    assert phase_domain_applies(x, fu, fd, 4, 2, 1.0, 0.2)
    assert not phase_domain_applies(x.to("meta"), fu, fd, 4, 2, 1.0, 0.2)          # not a CPU tensor
    y, y_ref = fn(x, b), fn(x, b, "ref")
    assert "_CorrelateBackward" in graph_nodes(y) and "_CorrelateBackward" not in graph_nodes(y_ref)
    torch.testing.assert_close(y_ref, y, rtol=1e-12, atol=1e-12)


def test_phase_domain_activation_gradient_convention():
    # _LreluClamp: leaky ReLU's gradient, and zero where the output sits at the clamp (docs/algorithm.md "Op: bias_act"'s CUDA rule).
    from ops._cpu.filtered_lrelu import _LreluClamp

    x = torch.tensor([-3.0, -1.0, 0.5, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    y = _LreluClamp.apply(x, 0.2, 1.5)
    torch.testing.assert_close(y, torch.tensor([-0.6, -0.2, 0.5, 1.5, 1.5], dtype=torch.float64))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.2, 0.2, 1.0, 0.0, 0.0], dtype=torch.float64))
    (g,) = torch.autograd.grad(_LreluClamp.apply(x, 0.2, None).sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.2, 0.2, 1.0, 1.0, 1.0], dtype=torch.float64))


def test_phase_domain_activation_clamp_skipped_only_strictly_inside():
    # Where every value is strictly inside the clamp, the clamp and its gradient mask are skipped; a value that
    # lands exactly on the clamp still gets the zero gradient, and one beyond it is clamped.
    from ops._cpu.filtered_lrelu import _LreluClamp

    x = torch.tensor([-3.0, -1.0, 0.5, 1.4], dtype=torch.float64, requires_grad=True)
    y = _LreluClamp.apply(x, 0.2, 1.5)
    torch.testing.assert_close(y, torch.nn.functional.leaky_relu(x.detach(), 0.2))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.2, 0.2, 1.0, 1.0], dtype=torch.float64))
    for edge, want_y in ((1.5, 1.5), (1.6, 1.5)):
        x = torch.tensor([0.5, edge], dtype=torch.float64, requires_grad=True)
        y = _LreluClamp.apply(x, 0.2, 1.5)
        assert y[1].item() == want_y
        (g,) = torch.autograd.grad(y.sum(), x)
        torch.testing.assert_close(g, torch.tensor([1.0, 0.0], dtype=torch.float64))
    x = torch.tensor([-8.0, 0.5], dtype=torch.float64, requires_grad=True)     # below -clamp after the slope
    y = _LreluClamp.apply(x, 0.2, 1.5)
    assert y[0].item() == -1.5
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.0, 1.0], dtype=torch.float64))


def _modulated_conv_def(x, w, s, padding, demodulate, gain):
    """Sample by sample, float64: pre-normalisation, modulation, demodulation, input gain, convolution
    (docs/algorithm.md "Modulated convolution" steps 1-5)."""
    x, w, s = x.double(), w.double(), s.double()
    out = []
    for n in range(x.shape[0]):
        wn = w
        sn = s[n]
        if demodulate:
            wn = wn / wn.square().mean([1, 2, 3], keepdim=True).sqrt()
            sn = sn / s.square().mean().sqrt()
        wn = wn * sn.view(1, -1, 1, 1)
        if demodulate:
            wn = wn / (wn.square().sum([1, 2, 3], keepdim=True) + 1e-8).sqrt()
        if gain is not None:
            wn = wn * gain.double()
        out.append(F.conv2d(x[n:n + 1], wn, padding=padding))
    return torch.cat(out)


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_modulated_conv_matches_per_sample_definition(impl, monkeypatch):
    import ops._cpu.winograd as winograd
    monkeypatch.setattr(winograd, "MIN_TILES", 0)     # the CPU path's Winograd also at this small size
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 0)
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 3, 6, 6, generator=gen), torch.randn(4, 3, 3, 3, generator=gen)
    s, gain = torch.randn(2, 3, generator=gen) + 1, torch.tensor(0.7)
    for pad, demod, g in ((2, True, gain), (0, False, None), (1, True, None)):
        want = _modulated_conv_def(x, w, s, pad, demod, g)
        # float32: the CPU path's 3x3 convolutions are Winograd F(4x4, 3x3), rounding a few times a direct conv's
        y = ops.modulated_conv2d(x, w, s, padding=pad, demodulate=demod, input_gain=g, impl=impl)
        assert y.dtype == torch.float32 and y.shape == want.shape
        torch.testing.assert_close(y.double(), want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)
        # float64 agrees to ~1e-14 on both paths
        y64 = ops.modulated_conv2d(x.double(), w.double(), s.double(), padding=pad, demodulate=demod,
                                   input_gain=None if g is None else g.double(), impl=impl)
        torch.testing.assert_close(y64, want, atol=1e-12, rtol=1e-12)
    fn = lambda x_, w_, s_: ops.modulated_conv2d(x_, w_, s_, padding=2, input_gain=gain.double(), impl=impl)  # noqa
    args = [x[:1, :2, :4, :4], w[:2, :2], s[:1, :2]]
    args = [t.double().clone().requires_grad_(True) for t in args]
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)
    # 1x1 kernels (ToRGB)
    w1 = torch.randn(4, 3, 1, 1, generator=gen)
    torch.testing.assert_close(ops.modulated_conv2d(x, w1, s, demodulate=False, impl=impl).double(),
                               _modulated_conv_def(x, w1, s, 0, False, None), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_conv2d_equals_scaled_weight_convolution(impl, monkeypatch):
    import ops._cpu.winograd as winograd
    monkeypatch.setattr(winograd, "MIN_TILES", 0)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 0)
    gen = torch.Generator().manual_seed(4)
    for k, pad in ((3, 1), (1, 0)):
        x = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, 3, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
        got, want = ops.conv2d(x, w, pad, gain=0.37, impl=impl), F.conv2d(x, w * 0.37, padding=pad)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert ("_Conv3x3WinogradBackward" in graph_nodes(got)) == (impl == "cpu" and k == 3)
    assert torch.autograd.gradgradcheck(lambda x_, w_: ops.conv2d(x_, w_, 1, gain=1.7, impl=impl),
                                        (x[:1, :, :4, :4].detach().requires_grad_(True),
                                         w[:2].detach().requires_grad_(True)))
