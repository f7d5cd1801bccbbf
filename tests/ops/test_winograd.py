"""The CPU path's 3x3 convolution by Winograd F(4x4, 3x3) (ops/_cpu/winograd.py) against F.conv2d: values,
gradients of every order, memory formats, and when the CPU path takes it. (The networks built on it:
tests/models/test_backends.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops._cpu.winograd as winograd
from ops._cpu.winograd import conv3x3_winograd


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [(7, 9), (4, 4), (13, 6)])
def test_values_and_gradients_match_direct_convolution_float64(pad, size):
    gen = torch.Generator().manual_seed(pad * 10 + size[0])
    x = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    got, want = conv3x3_winograd(x, w, pad), F.conv2d(x, w, padding=pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, (x, w), g), torch.autograd.grad(want, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x_, w_: conv3x3_winograd(x_, w_, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_float32_any_input_format_channels_last_output(fmt):
    gen = torch.Generator().manual_seed(2)
    for size in (18, 17):  # outputs 20 (whole 4x4 tiles) and 19 (a cropped view)
        x = torch.randn(2, 64, size, size, generator=gen).contiguous(memory_format=fmt)
        w = torch.randn(32, 64, 3, 3, generator=gen)
        got = conv3x3_winograd(x, w, 2)
        want = F.conv2d(x.double(), w.double(), padding=2)
        assert got.stride(1) == 1, "channels innermost (channels-last strides)"
        assert got.is_contiguous(memory_format=torch.channels_last) == (size == 18)
        err = (got.double() - want).abs().max().item() / want.abs().max().item()
        assert err < 5e-5, f"float32 Winograd error {err:.2e} of the largest output"


def test_bad_arguments_are_named():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match=r"weight must be \[O, C, 3, 3\]"):
        conv3x3_winograd(x, torch.randn(2, 3, 5, 5), 2)
    with pytest.raises(ValueError, match=r"x must be \[N, 4, H, W\]"):
        conv3x3_winograd(x, torch.randn(2, 4, 3, 3), 2)
    with pytest.raises(ValueError, match="padding -1"):
        conv3x3_winograd(x, torch.randn(2, 3, 3, 3), -1)


def test_gain_is_folded_into_the_weight_transform():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    got, want = conv3x3_winograd(x, w, 1, gain=0.37), F.conv2d(x, w * 0.37, padding=1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, (x, w), g), torch.autograd.grad(want, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda x_, w_: conv3x3_winograd(x_, w_, 2, gain=1.7), (x, w))


def test_applies_only_to_cpu_float32_64_3x3_with_enough_tiles_and_channels():
    w3, w1 = torch.randn(64, 64, 3, 3), torch.randn(64, 64, 1, 1)
    big = torch.randn(4, 64, 32, 32)                      # 4 x 8 x 8 = 256 output tiles at padding 1
    assert winograd.applies(big, w3, 1)
    assert winograd.applies(big.double(), w3, 1)
    assert not winograd.applies(big, w1, 1)
    assert not winograd.applies(big.half(), w3, 1)
    assert not winograd.applies(big[:3], w3, 1)           # 192 tiles: F.conv2d is faster there
    assert not winograd.applies(big[:, :, :28, :28], w3, 1)
    assert not winograd.applies(big[:, :32], w3[:, :32], 1)   # 32 input channels: likewise
    assert not winograd.applies(big, w3[:48], 1)              # 48 output channels
