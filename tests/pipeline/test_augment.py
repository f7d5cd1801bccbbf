"""Tests for the ADA augmentation pipe and the adaptive-p controller (docs/algorithm.md "ADA")."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.ada import AdaController
from pipeline.training.augment import SYM6_LOWPASS, AugmentPipe

COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def _pipe(p: float, **enabled) -> AugmentPipe:
    pipe = AugmentPipe(**enabled)
    pipe.set_p(p)
    return pipe


def _images(n=8, c=3, h=16, w=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand([n, c, h, w], generator=g, dtype=dtype) * 2 - 1)


# --------------------------------------------------------------------------------------------
# The filter


def test_sym6_is_an_orthonormal_lowpass():
    h = torch.tensor(SYM6_LOWPASS, dtype=torch.float64)
    assert h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for n in range(1, 6):  # double-shift orthogonality: what makes 2x up + 2x down the identity
        assert (h[2 * n:] * h[:-2 * n]).sum().abs().item() < 1e-12
    assert h.square().sum().item() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Identity and exact blits


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_p0_is_identity_although_the_resampling_pass_runs(channels):
    x = _images(c=channels, h=32, w=32)
    y = AugmentPipe.bgc()(x)  # p defaults to 0
    assert (y - x).abs().max().item() < 1e-5


def test_xflip_only_mirrors_exactly():
    x = _images(n=64)
    y = _pipe(1, xflip=1)(x)
    err_flip = (y - x.flip(3)).abs().amax(dim=(1, 2, 3))
    err_same = (y - x).abs().amax(dim=(1, 2, 3))
    assert torch.minimum(err_flip, err_same).max().item() < 1e-5
    n_flipped = int((err_flip < 1e-5).sum())
    assert 10 < n_flipped < 54  # both outcomes occur (P(fail) ~ 1e-8)


def test_rotate90_only_gives_exact_quarter_turns_all_four_occur():
    x = _images(n=64)
    y = _pipe(1, rotate90=1)(x)
    errs = torch.stack([(y - torch.rot90(x, k, dims=(2, 3))).abs().amax(dim=(1, 2, 3)) for k in range(4)])
    best = errs.min(dim=0)
    assert best.values.max().item() < 1e-5
    assert set(best.indices.tolist()) == {0, 1, 2, 3}


def test_xint_only_is_an_integer_shift_of_the_reflected_image_within_one_eighth():
    n, size = 32, 32
    x = _images(n=n, h=size, w=size)
    y = _pipe(1, xint=1)(x)
    r = round(0.125 * size)
    xp = F.pad(x, [r, r, r, r], mode="reflect")
    shifts = []
    for i in range(n):
        found = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
                 if (y[i] - xp[i, :, r + dy:r + dy + size, r + dx:r + dx + size]).abs().max() < 1e-5]
        assert found, f"sample {i} is not an integer shift within +-{r} px"
        shifts.append(found[0])
    assert len(set(shifts)) > n // 2  # shifts vary from sample to sample


# --------------------------------------------------------------------------------------------
# The general resampling pass against analytic transforms


def _field(cx, cy):
    """A smooth test image defined on centred pixel coordinates."""
    return torch.cos(0.3 * cx + 0.2 * cy) + torch.sin(0.25 * cy - 0.1 * cx)


def _centred_grid(size):
    c = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    return cx, cy


def test_general_matrix_samples_the_input_at_M_times_output_coordinates():
    size = 32
    cx, cy = _centred_grid(size)
    x = _field(cx, cy)[None, None].float()
    a, s, tx, ty = math.radians(30), 1.1, 2.3, -1.7
    m = torch.tensor([[s * math.cos(a), -s * math.sin(a), tx],
                      [s * math.sin(a), s * math.cos(a), ty],
                      [0, 0, 1]], dtype=torch.float64)
    y = AugmentPipe()._resample(x, torch.eye(3, dtype=torch.float64)[None], m[None])[0, 0].double()
    sx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2]
    sy = m[1, 0] * cx + m[1, 1] * cy + m[1, 2]
    inside = (sx.abs() < size / 2 - 6) & (sy.abs() < size / 2 - 6)  # away from the reflected border
    assert inside.sum() > 100
    expected = _field(sx, sy)
    # Second-order (bilinear on the 2x grid) error only; a first-order position error, e.g. from
    # ignoring sym6's group delay, gives 0.05 here.
    assert (y - expected)[inside].abs().max().item() < 1e-2
    # The inverse convention would be far off: the test can tell the two apart.
    mi = torch.linalg.inv(m)
    wrong = _field(mi[0, 0] * cx + mi[0, 1] * cy + mi[0, 2], mi[1, 0] * cx + mi[1, 1] * cy + mi[1, 2])
    assert (y - wrong)[inside].abs().max().item() > 0.3


def test_general_quarter_turn_agrees_with_the_exact_blit():
    """Blit and general matrices share one convention (a smooth image: the general pass
    interpolates)."""
    size = 32
    cx, cy = _centred_grid(size)
    x = _field(cx, cy)[None, None].float()
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)[None]
    eye = torch.eye(3, dtype=torch.float64)[None]
    pipe = AugmentPipe()
    via_general = pipe._resample(x, eye, rot)
    via_blit = pipe._resample(x, rot, eye)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (via_general - via_blit)[inner].abs().max().item() < 1e-2
    assert (via_blit - x)[inner].abs().max().item() > 0.5


# --------------------------------------------------------------------------------------------
# Probabilities and distributions


def test_xflip_fraction_follows_p():
    x = _images(n=800, h=8, w=8)
    for p, expected in ((1.0, 0.5), (0.5, 0.25)):
        y = _pipe(p, xflip=1)(x)
        flipped = ((y - x.flip(3)).abs().amax(dim=(1, 2, 3)) < 1e-5).float().mean().item()
        assert abs(flipped - expected) < 0.07, (p, flipped)


def test_pre_and_post_rotation_together_happen_with_probability_p():
    torch.manual_seed(1)
    pipe = _pipe(0.5, rotate=1)
    _, general = pipe._geometric_matrices(20000, 16, 16, 0.5, torch.device("cpu"))
    rotated = ((general - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(1, 2)) > 1e-12).double().mean()
    assert abs(rotated.item() - 0.5) < 0.02


def test_geometric_parameter_distributions_at_p1():
    torch.manual_seed(2)
    n, size, dev = 20000, 32, torch.device("cpu")
    _, g = _pipe(1, scale=1)._geometric_matrices(n, size, size, 1.0, dev)
    assert torch.log2(g[:, 0, 0]).std().item() == pytest.approx(0.2, rel=0.05)
    assert torch.equal(g[:, 0, 0], g[:, 1, 1])
    _, g = _pipe(1, aniso=1)._geometric_matrices(n, size, size, 1.0, dev)
    assert torch.log2(g[:, 0, 0]).std().item() == pytest.approx(0.2, rel=0.05)
    assert torch.allclose(g[:, 0, 0] * g[:, 1, 1], torch.ones(n, dtype=torch.float64))
    _, g = _pipe(1, xfrac=1)._geometric_matrices(n, size, size, 1.0, dev)
    assert (g[:, :2, 2] / size).std(dim=0).tolist() == pytest.approx([0.125, 0.125], rel=0.05)
    b, _ = _pipe(1, xint=1)._geometric_matrices(n, size, size, 1.0, dev)
    t = b[:, :2, 2]
    assert torch.equal(t, t.round()) and t.abs().max().item() == round(0.125 * size)


def test_brightness_only_adds_a_per_sample_constant_with_std_0p2():
    x = _images(n=2000, h=4, w=4)
    y = _pipe(1, brightness=1)(x)
    d = (y - x).reshape(2000, -1)
    assert d.std(dim=1).max().item() < 1e-5  # constant within each sample
    offsets = d.mean(dim=1)
    assert offsets.std().item() == pytest.approx(0.2, rel=0.06)
    assert abs(offsets.mean().item()) < 0.02


def test_contrast_scales_each_sample_by_lognormal_factor():
    x = _images(n=2000, h=4, w=4)
    y = _pipe(1, contrast=1)(x)
    c = (y * x).sum(dim=(1, 2, 3)) / x.square().sum(dim=(1, 2, 3))
    assert (y - c[:, None, None, None] * x).abs().max().item() < 1e-4
    assert torch.log2(c).std().item() == pytest.approx(0.5, rel=0.06)


def _luma_chroma(x):
    luma = x[:, :3].mean(dim=1, keepdim=True)
    return luma, x[:, :3] - luma


def test_hue_and_saturation_act_orthogonally_to_luma():
    x = _images(n=500, h=4, w=4)
    luma, chroma = _luma_chroma(x)
    y = _pipe(1, hue=1)(x)
    luma_y, chroma_y = _luma_chroma(y)
    assert (luma_y - luma).abs().max().item() < 1e-5
    assert (chroma_y.norm(dim=1) - chroma.norm(dim=1)).abs().max().item() < 1e-4  # a rotation
    assert (chroma_y - chroma).abs().amax(dim=(1, 2, 3)).median().item() > 0.1
    y = _pipe(1, saturation=1)(x)
    luma_y, chroma_y = _luma_chroma(y)
    assert (luma_y - luma).abs().max().item() < 1e-5
    s = (chroma_y * chroma).sum(dim=(1, 2, 3)) / chroma.square().sum(dim=(1, 2, 3))
    assert torch.log2(s).std().item() == pytest.approx(1.0, rel=0.1)


def test_lumaflip_negates_luma_for_half_and_keeps_chroma():
    x = _images(n=400, h=4, w=4)
    luma, chroma = _luma_chroma(x)
    y = _pipe(1, lumaflip=1)(x)
    luma_y, chroma_y = _luma_chroma(y)
    assert (chroma_y - chroma).abs().max().item() < 1e-5
    flipped = (luma_y + luma).abs().amax(dim=(1, 2, 3)) < 1e-5
    same = (luma_y - luma).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((flipped | same).all())
    assert abs(flipped.float().mean().item() - 0.5) < 0.1


def test_alpha_gets_geometry_but_no_colour():
    x = _images(n=64, c=4)
    y = _pipe(1, **{n: 1 for n in COLOR})(x)
    assert (y[:, 3] - x[:, 3]).abs().max().item() < 1e-5
    assert (y[:, :3] - x[:, :3]).abs().max().item() > 0.1
    y = _pipe(1, xflip=1)(x)
    flipped = (y - x.flip(3)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert flipped.any() and ((y[:, 3] - x[:, 3].flip(2)).abs().amax(dim=(1, 2))[flipped] < 1e-5).all()


def test_grey_images_brightness_contrast_lumaflip_apply_hue_saturation_do_not():
    x = _images(n=64, c=1)
    y = _pipe(1, hue=1, saturation=1)(x)
    assert (y - x).abs().max().item() < 1e-5
    y = _pipe(1, brightness=1, contrast=1, lumaflip=1)(x)
    a = ((y - y.mean(dim=(2, 3), keepdim=True)) * (x - x.mean(dim=(2, 3), keepdim=True))).sum(dim=(1, 2, 3))
    a = a / (x - x.mean(dim=(2, 3), keepdim=True)).square().sum(dim=(1, 2, 3))
    b = (y - a[:, None, None, None] * x).mean(dim=(1, 2, 3))
    assert (y - (a[:, None, None, None] * x + b[:, None, None, None])).abs().max().item() < 1e-4
    assert (a < 0).any() and (a > 0).any()  # luma flip on grey is negation


# --------------------------------------------------------------------------------------------
# Module behaviour


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 3, 16, 24), (2, 4, 12, 12)])
def test_shape_dtype_device_preserved_at_p1(shape, dtype):
    x = torch.rand(shape, dtype=dtype) * 2 - 1
    y = _pipe(1, **{n: 1 for n in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac") + COLOR})(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()


def test_gradients_flow_to_the_input_and_match_finite_differences():
    pipe = AugmentPipe.bgc()
    pipe.set_p(1)
    x = _images(n=1, h=6, w=6, dtype=torch.float64).requires_grad_()

    def f(inp):
        torch.manual_seed(3)  # same random transform on every call
        return pipe(inp)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    x32 = _images(n=4, h=16, w=16).requires_grad_()
    f(x32).square().sum().backward()
    assert x32.grad is not None and x32.grad.abs().sum().item() > 0


def test_p_is_a_settable_buffer_in_state_dict():
    pipe = AugmentPipe.bgc()
    assert float(pipe.p) == 0.0
    pipe.set_p(0.3)
    state = pipe.state_dict()
    assert list(state) == ["p"] and float(state["p"]) == pytest.approx(0.3)
    other = AugmentPipe.bgc()
    other.load_state_dict(state)
    assert float(other.p) == pytest.approx(0.3)
    pipe.p.copy_(torch.tensor(0.7))
    assert "p=0.7000" in repr(pipe)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="C=2"):
        AugmentPipe.bgc()(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        AugmentPipe.bgc()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="xflip"):
        AugmentPipe(xflip=-1)


@pytest.mark.gpu
def test_cuda_identity_and_blits():
    x = _images(n=16, h=32, w=32).cuda()
    pipe = AugmentPipe.bgc().cuda()
    assert (pipe(x) - x).abs().max().item() < 1e-5
    y = _pipe(1, xflip=1).cuda()(x)
    err = torch.minimum((y - x.flip(3)).abs().amax(dim=(1, 2, 3)), (y - x).abs().amax(dim=(1, 2, 3)))
    assert err.max().item() < 1e-5
    pipe.set_p(1)
    xg = x.clone().requires_grad_()
    pipe(xg).sum().backward()
    assert xg.grad.abs().sum().item() > 0


# --------------------------------------------------------------------------------------------
# AdaController


def test_ada_step_direction_and_size_every_fourth_iteration():
    """p moves after iterations 4, 8, … counted from 1 (the official loop's `batch_idx % 4 == 0` after
    `batch_idx += 1`), never after the first."""
    ada = AdaController("ada", target=0.6, interval=4, ada_kimg=500)
    step = 32 * 4 / (500 * 1000)
    assert step == pytest.approx(2.56e-4)
    assert ada.p == 0.0 and float(ada.pipe.p) == 0.0
    p_after = {}
    for i in range(1, 13):  # iteration i (1-based); E[sign] = 1 > 0.6 (overfitting: raise p) up to 8, then -1
        ada.observe(torch.ones(32, 1) if i <= 8 else -torch.ones(32, 1))
        p_after[i] = ada.step(32)
    changed = [i for i in range(1, 13) if p_after[i] != p_after.get(i - 1, 0.0)]
    assert changed == [4, 8, 12]
    assert p_after[3] == 0.0 and p_after[4] == pytest.approx(step) and p_after[8] == pytest.approx(2 * step)
    assert p_after[12] == pytest.approx(step) and float(ada.pipe.p) == pytest.approx(step)
    assert ada.last_signs_mean == pytest.approx(-1.0) and ada.step_idx == 12


def test_ada_p_never_below_zero_and_unchanged_at_target():
    ada = AdaController("ada", interval=1)
    ada.observe(-torch.ones(8, 1))
    assert ada.step(32) == 0.0
    ada = AdaController("ada", initial_p=0.5, interval=1)
    ada.observe(torch.tensor([[1.0], [1.0], [1.0], [-1.0], [-1.0]]))  # mean 0.2 < 0.6
    assert ada.step(32) == pytest.approx(0.5 - 0.64e-4)
    ada = AdaController("ada", initial_p=0.5, target=0.6, interval=1)
    ada.observe(torch.tensor([1.0] * 8 + [-1.0] * 2))  # mean exactly 0.6
    assert ada.step(32) == pytest.approx(0.5)


def test_ada_uses_the_cross_worker_reduction():
    ada = AdaController("ada", initial_p=0.1, interval=1)
    ada.observe(torch.ones(4, 1))  # this worker alone would raise p ...
    other_worker = torch.tensor([-12.0, 12.0], dtype=torch.float64)
    p = ada.step(32, reduce=lambda t: t + other_worker)  # ... but the global mean is -0.5
    assert p == pytest.approx(0.1 - 0.64e-4)


def test_fixed_and_noaug_modes():
    fixed = AdaController("fixed", fixed_p=0.2)
    fixed.observe(torch.ones(8, 1))
    for _ in range(8):
        fixed.step(32)
    assert fixed.p == 0.2 and float(fixed.pipe.p) == pytest.approx(0.2)
    noaug = AdaController("noaug")
    noaug.observe(torch.ones(8, 1))
    assert noaug.pipe is None and noaug.step(32) == 0.0
    with pytest.raises(ValueError, match="--aug="):
        AdaController("sometimes")


def test_ada_state_round_trip_continues_identically():
    torch.manual_seed(4)
    logits = [torch.randn(16, 1) + 2.0 for _ in range(11)]  # E[sign] ~ 0.95 > target
    a = AdaController("ada", ada_kimg=1)
    for lg in logits[:7]:
        a.observe(lg)
        a.step(16)
    state = a.state_dict()
    b = AdaController("ada", ada_kimg=1)
    b.load_state_dict(state)
    assert float(b.pipe.p) == pytest.approx(a.p) and b.step_idx == 7
    for lg in logits[7:]:
        a.observe(lg)
        b.observe(lg)
        assert a.step(16) == b.step(16)
    assert a.p > 0
    with pytest.raises(ValueError, match="--aug=ada"):
        AdaController("fixed").load_state_dict(state)
