"""Discriminator (docs/algorithm.md "Discriminator"): shapes, conditioning, minibatch-std grouping, R1-style double backward."""

from __future__ import annotations

import pytest
import torch

import models
from models.discriminator import minibatch_std

SMALL_D = dict(channel_base=256, channel_max=16)


def small_D(res=16, seed=0, **kw):
    torch.manual_seed(seed)
    return models.Discriminator(models.build_config("stylegan3-t", res, **{**SMALL_D, **kw}).D)


@pytest.mark.parametrize("c_dim,channels", [(0, 3), (4, 1), (0, 4)])
def test_forward_shapes(c_dim, channels):
    D = small_D(c_dim=c_dim, img_channels=channels)
    img = torch.randn(4, channels, 16, 16)
    c = torch.nn.functional.one_hot(torch.arange(4) % 4, c_dim).float() if c_dim else None
    logits = D(img, c)
    assert logits.shape == (4, 1) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    if c_dim:
        assert not torch.allclose(D(img, c.flip(0)), logits)
        with pytest.raises(ValueError, match="c must have shape"):
            D(img, None)
    with pytest.raises(ValueError, match="D expects images"):
        D(torch.randn(4, channels, 8, 8), c)


def test_minibatch_std_strided_groups():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 2, 2)
    y = minibatch_std(x, group_size=4)
    assert y.shape == (8, 7, 2, 2) and torch.equal(y[:, :6], x)
    # N=8, G=4 -> N/G = 2 groups; sample n belongs to group n % 2 (strided, not contiguous).
    for g in range(2):
        members = x[g::2]
        std = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for n in range(g, 8, 2):
            assert torch.allclose(y[n, 6], std.expand(2, 2), atol=1e-6)
    contiguous = (x[:4].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert not torch.allclose(y[0, 6, 0, 0], contiguous)
    # Group size larger than the batch: one group of the whole batch.
    y2 = minibatch_std(x[:2], group_size=4)
    assert torch.allclose(y2[:, 6], ((x[:2].var(0, unbiased=False) + 1e-8).sqrt().mean()).expand(2, 2, 2))
    with pytest.raises(ValueError, match="not divisible"):
        minibatch_std(x[:6], group_size=4)


def test_r1_double_backward_and_parameter_grads():
    D = small_D()
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(real, None)
    (g,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    penalty = g.square().sum([1, 2, 3]).mean()
    penalty.backward()
    missing = [n for n, p in D.named_parameters() if p.grad is None]
    assert missing == ["b4.out.bias"]   # the input gradient does not depend on the final bias


def test_resample_filter_buffers():
    D = small_D()
    f = torch.tensor([1.0, 3, 3, 1])
    expected = torch.outer(f, f) / 64
    bufs = {k: v for k, v in D.state_dict().items() if k.endswith("resample_filter")}
    assert bufs and all(torch.equal(v, expected) for v in bufs.values())


def test_fp16_blocks_are_the_four_highest_resolutions_but_cpu_stays_fp32():
    cfg = models.build_config("stylegan3-t", 128, **SMALL_D).D
    with torch.device("meta"):
        D = models.Discriminator(cfg)
    assert {r: getattr(D, f"b{r}").use_fp16 for r in D.block_resolutions} == {
        128: True, 64: True, 32: True, 16: True, 8: False}
    D = small_D()
    activations = []
    hooks = [getattr(D, f"b{r}").register_forward_hook(lambda m, a, out: activations.append(out.dtype))
             for r in D.block_resolutions]
    D(torch.randn(4, 3, 16, 16), None)
    for h in hooks:
        h.remove()
    assert activations and all(dt == torch.float32 for dt in activations)
