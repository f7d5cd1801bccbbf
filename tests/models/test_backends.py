"""The networks on each ops backend (docs/ops.md "Backends"): the backend given to the constructor reaches every op
call, and the CPU path (Winograd convolutions, phase-domain filtered_lrelu, polyphase upfirdn2d) computes the same
images, logits and gradients as the reference (the ops' definitions) up to float32 rounding."""

from __future__ import annotations

import pytest
import torch

import models
import ops._cpu.winograd as winograd
from tests.ops.ops_definition import graph_nodes


@pytest.fixture
def winograd_everywhere(monkeypatch):
    # so that all 3x3 convolutions of these small networks take the CPU path's Winograd (a tuning threshold, not
    # a switch: the choice between paths is the impl argument)
    monkeypatch.setattr(winograd, "MIN_TILES", 0)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 0)


def test_generator_cpu_path_same_as_reference(winograd_everywhere):
    # The whole CPU path against the definitions, on a small StyleGAN3-T: same images and gradients up to
    # float32 rounding; each network's graph shows which ops ran.
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))

    def run(impl):
        torch.manual_seed(0)
        G, _ = models.build("stylegan3-t", 16, channel_base=1024, channel_max=32, z_dim=16, w_dim=16, impl=impl)
        assert {m.impl for m in G.modules() if hasattr(m, "impl")} == {impl}
        img = G(z, None)
        nodes = graph_nodes(img)
        img.square().mean().backward()
        return img.detach(), {k: p.grad.clone() for k, p in G.named_parameters() if p.grad is not None}, nodes

    fast_img, fast_grads, fast_nodes = run("cpu")
    ref_img, ref_grads, ref_nodes = run("ref")
    assert {"_Conv3x3WinogradBackward", "_CorrelateBackward"} <= fast_nodes
    assert not {"_Conv3x3WinogradBackward", "_CorrelateBackward", "Upfirdn2dCpuBackward"} & ref_nodes
    assert "Upfirdn2dRefBackward" in ref_nodes
    assert fast_img.is_contiguous()
    scale = ref_img.abs().max().item()
    torch.testing.assert_close(fast_img, ref_img, atol=1e-4 * scale, rtol=1e-4)
    assert fast_grads.keys() == ref_grads.keys() and len(ref_grads) > 20
    for k in ref_grads:
        s = ref_grads[k].abs().max().item()
        torch.testing.assert_close(fast_grads[k], ref_grads[k], atol=1e-3 * s + 1e-12, rtol=1e-3, msg=k)


def test_discriminator_and_r1_cpu_path_same_as_reference(winograd_everywhere):
    # D's stride-1 3x3 convolutions run by Winograd on the CPU path: logits, parameter gradients and the R1
    # penalty's double-backward gradients agree with the reference up to float32 rounding.
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))

    def run(impl):
        torch.manual_seed(0)
        _, D = models.build("stylegan3-t", 16, channel_base=512, channel_max=32, impl=impl)
        x = img.clone().requires_grad_(True)
        logits = D(x, None)
        nodes = graph_nodes(logits)
        (rgrad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        (logits.sum() + rgrad.square().sum()).backward()
        return logits.detach(), rgrad.detach(), {k: p.grad.clone() for k, p in D.named_parameters()}, nodes

    fast, ref = run("cpu"), run("ref")
    assert "_Conv3x3WinogradBackward" in fast[3] and "_Conv3x3WinogradBackward" not in ref[3]
    assert "Upfirdn2dCpuBackward" in fast[3] and "Upfirdn2dRefBackward" in ref[3]
    for a, b in zip(fast[:2], ref[:2]):
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-4)
    assert len(ref[2]) > 10
    for k in ref[2]:
        s = ref[2][k].abs().max().item()
        torch.testing.assert_close(fast[2][k], ref[2][k], atol=1e-3 * s + 1e-12, rtol=1e-3, msg=k)


def test_auto_is_the_cpu_path_on_cpu_and_bad_impl_is_named(monkeypatch):
    monkeypatch.delenv("STYLEGAN3_OPS_IMPL", raising=False)
    torch.manual_seed(0)
    G, D = models.build("stylegan3-t", 16, channel_base=1024, channel_max=32, z_dim=16, w_dim=16)
    assert "_CorrelateBackward" in graph_nodes(G(torch.randn(2, 16), None))
    assert "Upfirdn2dCpuBackward" in graph_nodes(D(torch.randn(2, 3, 16, 16, requires_grad=True), None))
    with pytest.raises(ValueError, match="Generator: impl must be one of"):
        models.build("stylegan3-t", 16, channel_base=1024, channel_max=32, impl="cuda")
