"""Generator behaviour at small configs: shapes, truncation, EMA statistics, input transform
(translation equivariance), filter design (docs/algorithm.md "Mapping network", "Synthesis network")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

import models
from models.filters import design_lowpass_filter

SMALL = dict(channel_base=1024, channel_max=16, z_dim=16, w_dim=16)


def small_G(preset="stylegan3-t", res=16, seed=0, **kw):
    torch.manual_seed(seed)
    G, _ = models.build(preset, res, **{**SMALL, **kw})
    return G


@pytest.mark.parametrize("preset,c_dim,channels", [("stylegan3-t", 0, 3), ("stylegan3-t", 3, 1),
                                                   ("stylegan3-r", 0, 4), ("stylegan3-r", 2, 3)])
def test_forward_shapes(preset, c_dim, channels):
    G = small_G(preset, c_dim=c_dim, img_channels=channels)
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels, G.num_ws) == (16, c_dim, 16, 16, channels, 16)
    z = torch.randn(2, 16)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1]), c_dim).float() if c_dim else None
    with torch.no_grad():
        ws = G.mapping(z, c)
        img = G.synthesis(ws)
    assert ws.shape == (2, 16, 16) and ws.dtype == torch.float32
    assert img.shape == (2, channels, 16, 16) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.std() > 0
    if c_dim:
        with torch.no_grad():
            ws_other = G.mapping(z, c.flip(0))
        assert not torch.allclose(ws, ws_other)       # the label matters
        with pytest.raises(ValueError, match="c must have shape"):
            G.mapping(z, None)


def test_gradients_reach_every_parameter():
    G = small_G("stylegan3-r", res=16)
    img = G(torch.randn(2, 16), None)
    img.square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_truncation():
    G = small_G()
    G.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(3, 16)
    with torch.no_grad():
        ws = G.mapping(z, None)
        assert torch.equal(G.mapping(z, None, truncation_psi=1), ws)              # psi = 1: identity
        ws0 = G.mapping(z, None, truncation_psi=0)
        assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0), atol=1e-6)    # psi = 0: w_avg
        ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=4)
        assert torch.allclose(ws_half[:, :4], G.mapping.w_avg + 0.5 * (ws[:, :4] - G.mapping.w_avg), atol=1e-6)
        assert torch.equal(ws_half[:, 4:], ws[:, 4:])
        # psi = 0 gives the same image for every z: the w_avg image.
        img0 = G(z, None, truncation_psi=0)
        img_avg = G.synthesis(G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1))
    assert torch.allclose(img0, img_avg.expand_as(img0), atol=1e-5)


def test_emas_update_only_when_asked():
    G = small_G()
    layer = G.synthesis.L3_36_16
    z = torch.randn(4, 16)
    w_avg0, mag0 = G.mapping.w_avg.clone(), layer.magnitude_ema.clone()
    with torch.no_grad():
        G(z, None)
    assert torch.equal(G.mapping.w_avg, w_avg0) and torch.equal(layer.magnitude_ema, mag0)

    # With update_emas=True: w_avg <- lerp(mean w, w_avg, 0.998); magnitude_ema <- lerp(E[x^2], ema, beta).
    inputs = {}
    def grab_input(module, args):
        inputs.setdefault("x", args[0].clone())

    hook = layer.register_forward_pre_hook(grab_input)
    with torch.no_grad():
        ws = G.mapping(z, None)
        G(z, None, update_emas=True)
    hook.remove()
    beta = G.synthesis.L3_36_16.magnitude_ema_beta
    assert torch.allclose(G.mapping.w_avg, 0.002 * ws[:, 0].mean(0) + 0.998 * w_avg0, atol=1e-7)
    expected_mag = beta * mag0 + (1 - beta) * inputs["x"].square().mean()
    assert torch.allclose(layer.magnitude_ema, expected_mag, rtol=1e-6)
    assert layer.magnitude_ema != mag0


def test_set_input_transform_stores_inverse():
    G = small_G()
    models.set_input_transform(G, tx=0.25, ty=-0.125, angle=0.3)
    a = 0.3
    m = torch.tensor([[math.cos(a), math.sin(a), 0.25], [-math.sin(a), math.cos(a), -0.125], [0, 0, 1.0]])
    assert torch.allclose(G.synthesis.input.transform @ m, torch.eye(3), atol=1e-6)
    models.set_input_transform(G.synthesis)
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))


@pytest.mark.parametrize("preset", ["stylegan3-t", "stylegan3-r"])
def test_integer_translation_is_equivariant(preset):
    """Translating the input by k output pixels moves the image by k pixels (docs/algorithm.md "Input layer", "Equivariance metrics")."""
    res, k, m = 32, 3, 4
    G = small_G(preset, res=res, channel_base=2048, seed=1)
    z = torch.randn(2, 16)
    with torch.no_grad():
        ws = G.mapping(z, None)
        a = G.synthesis(ws)
        models.set_input_transform(G, tx=k / res, ty=0.0)
        b = G.synthesis(ws)
        models.set_input_transform(G, tx=0.0, ty=k / res)
        c = G.synthesis(ws)

    def psnr(x, y):
        peak = 2 * a.abs().max()
        return float(10 * torch.log10(peak ** 2 / (x - y).square().mean()))

    eq_x = psnr(b[..., m:-m, m + k:-m], a[..., m:-m, m:-m - k])     # content moved right by k
    eq_y = psnr(c[..., m + k:-m, m:-m], a[..., m:-m - k, m:-m])     # content moved down by k
    baseline = psnr(b[..., m:-m, m:-m], a[..., m:-m, m:-m])         # ignoring the shift
    wrong_way = psnr(b[..., m:-m, m:-m - k], a[..., m:-m, m + k:-m])
    assert eq_x > 50 and eq_y > 50, (eq_x, eq_y)
    assert eq_x > baseline + 20 and eq_x > wrong_way + 20, (eq_x, baseline, wrong_way)


# ------------------------------------------------------------------------------------------------
# Filter design (docs/algorithm.md "Filter design")

def _kaiser_beta(atten):
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten >= 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def _spec_sinc(numtaps, cutoff, width, fs):
    nyq = fs / 2
    atten = 2.285 * (numtaps - 1) * math.pi * (width / nyq) + 7.95
    n = np.arange(numtaps) - (numtaps - 1) / 2
    h = (cutoff / nyq) * np.sinc((cutoff / nyq) * n) * np.kaiser(numtaps, _kaiser_beta(atten))
    return h / h.sum()


def _spec_jinc(numtaps, cutoff, width, fs):
    u = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    ux, uy = np.meshgrid(u, u)
    r = np.sqrt(ux ** 2 + uy ** 2)
    f = scipy.special.j1(2 * math.pi * cutoff * r) / (math.pi * r)
    atten = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    w = np.kaiser(numtaps, _kaiser_beta(atten))
    f = f * np.outer(w, w)
    return f / f.sum()


@pytest.mark.parametrize("numtaps,cutoff,width,fs", [(12, 2.0, 12.0, 32), (24, 4.0, 8.0, 64),
                                                     (12, 90.5097, 74.98, 512), (12, 11.3137, 41.37, 128)])
def test_separable_filter_matches_firwin_and_formula(numtaps, cutoff, width, fs):
    f = design_lowpass_filter(numtaps, cutoff, width, fs)
    assert f.shape == (numtaps,)
    np.testing.assert_allclose(f, scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), rtol=0, atol=1e-12)
    np.testing.assert_allclose(f, _spec_sinc(numtaps, cutoff, width, fs), rtol=0, atol=1e-10)
    assert f.sum() == pytest.approx(1.0) and np.allclose(f, f[::-1])


@pytest.mark.parametrize("numtaps,cutoff,width,fs", [(12, 2.0, 12.0, 32), (12, 45.25, 37.5, 256)])
def test_radial_filter_matches_jinc_formula(numtaps, cutoff, width, fs):
    f = design_lowpass_filter(numtaps, cutoff, width, fs, radial=True)
    assert f.shape == (numtaps, numtaps)
    np.testing.assert_allclose(f, _spec_jinc(numtaps, cutoff, width, fs), rtol=0, atol=1e-12)
    assert f.sum() == pytest.approx(1.0) and np.allclose(f, f.T) and np.allclose(f, f[::-1, ::-1])


def test_identity_filter_is_absent():
    assert design_lowpass_filter(1, 2.0, 1.0, 16) is None
    G = small_G("stylegan3-r")
    torgb = G.synthesis.L14_16_3
    assert torgb.up_filter is None and torgb.down_filter is None
    assert "up_filter" not in {k.split(".")[-1] for k in G.state_dict() if k.startswith("synthesis.L14")}


def test_layer_buffers_hold_the_designed_filters():
    G = small_G("stylegan3-r")
    for name in G.synthesis.layer_names[:-1]:
        layer = getattr(G.synthesis, name)
        s = layer.spec
        up = design_lowpass_filter(s.up_taps, s.in_cutoff, 2 * s.in_half_width, s.tmp_sampling_rate)
        down = design_lowpass_filter(s.down_taps, s.out_cutoff, 2 * s.out_half_width, s.tmp_sampling_rate,
                                     radial=s.radial_down)
        assert torch.equal(layer.up_filter, torch.tensor(up, dtype=torch.float32))
        assert torch.equal(layer.down_filter, torch.tensor(down, dtype=torch.float32))
        assert layer.down_filter.ndim == (1 if s.is_critically_sampled else 2)
