"""Mixed precision on CUDA (docs/algorithm.md "Mixed precision"): fp16 exactly in the layers/blocks the schedule marks, fp32
everywhere else and with force_fp32. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import models

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _dtypes(modules, run):
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(name, out.dtype))
             for name, m in modules]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_generator_fp16_layers_on_cuda():
    torch.manual_seed(0)
    G, D = models.build("stylegan3-t", 64, channel_base=4096, channel_max=64)
    G, D = G.cuda(), D.cuda()
    z = torch.randn(4, G.z_dim, device="cuda")
    layers = [(n, getattr(G.synthesis, n)) for n in G.synthesis.layer_names]
    with torch.no_grad():
        seen = _dtypes(layers, lambda: G(z, None))
        img = G(z, None)
        seen32 = _dtypes(layers, lambda: G(z, None, force_fp32=True))
    expect = {n: (torch.float16 if m.use_fp16 else torch.float32) for n, m in layers}
    assert seen == expect and any(m.use_fp16 for _, m in layers) and not all(m.use_fp16 for _, m in layers)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert all(dt == torch.float32 for dt in seen32.values())
    blocks = [(f"b{r}", getattr(D, f"b{r}")) for r in D.block_resolutions]
    seen_d = _dtypes(blocks, lambda: D(img, None))
    assert seen_d == {n: (torch.float16 if b.use_fp16 else torch.float32) for n, b in blocks}
    assert D(img, None).dtype == torch.float32
