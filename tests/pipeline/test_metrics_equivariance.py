"""Equivariance metrics (docs/algorithm.md "Equivariance metrics") on generators whose equivariance is known by construction.

The toy generators draw a band-limited image analytically: a sum of sinusoids of the *continuous* pixel
coordinates, evaluated at `T·p` where `T` is the generator's input transform buffer (exactly what the Fourier
input layer of docs/algorithm.md "Input layer" does). Such an image moves and rotates exactly with `T`, so the metrics must score it
very high; the same image ignoring `T` does not move at all and must score low.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.metrics import equivariance as eq

RES = 32


class _Input(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("transform", torch.eye(3))


class _ToySynthesis(torch.nn.Module):
    """img[n, c](p) = Σ_k a[n, k, c]·sin(2π(f_k·q + φ[n, k])), q = T[:2, :2]·p + T[:2, 2] (or q = p).

    `p` are the pixel centres in image units ([-0.5, 0.5] across the image, x along width), `f_k` fixed
    frequencies in cycles per image, `a`, `φ` read from the latent. `post` is an optional pixel-space function.
    """

    def __init__(self, res, channels, freqs, follow_transform=True, post=None):
        super().__init__()
        self.input = _Input()
        self.res, self.channels, self.follow_transform, self.post = res, channels, follow_transform, post
        self.register_buffer("freqs", freqs)

    def forward(self, ws):
        n, k, c = ws.shape[0], self.freqs.shape[0], self.channels
        x = (torch.arange(self.res, dtype=torch.float64) + 0.5) / self.res - 0.5
        py, px = torch.meshgrid(x, x, indexing="ij")
        T = self.input.transform.double() if self.follow_transform else torch.eye(3, dtype=torch.float64)
        qx = T[0, 0] * px + T[0, 1] * py + T[0, 2]
        qy = T[1, 0] * px + T[1, 1] * py + T[1, 2]
        w = ws[:, 0].double()
        phase, amp = w[:, :k], w[:, k:].reshape(n, k, c) * (0.6 / math.sqrt(k))
        arg = self.freqs[:, 0, None, None] * qx + self.freqs[:, 1, None, None] * qy  # [K, H, W]
        waves = torch.sin(2 * math.pi * (arg[None] + phase[:, :, None, None]))  # [N, K, H, W]
        img = torch.einsum("nkhw,nkc->nchw", waves, amp).float()
        return self.post(img) if self.post is not None else img


class ToyG(torch.nn.Module):
    """Duck-typed generator: `mapping` passes z through, `synthesis` is `_ToySynthesis`."""

    def __init__(self, max_freq=3.0, num_freqs=12, channels=3, seed=0, **kwargs):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # Frequencies uniform over a disc of radius max_freq cycles/image: band-limited in every direction, so
        # rotated copies stay below Nyquist (RES/2 = 16 cycles/image).
        r = max_freq * torch.rand(num_freqs, generator=g, dtype=torch.float64).sqrt()
        a = 2 * math.pi * torch.rand(num_freqs, generator=g, dtype=torch.float64)
        freqs = torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1)
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = num_freqs * (1 + channels), 0, RES, channels
        self.synthesis = _ToySynthesis(RES, channels, freqs, **kwargs)

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return z[:, None, :]


@pytest.fixture(scope="module")
def equivariant():
    return ToyG()


@pytest.fixture(scope="module")
def frozen():
    return ToyG(follow_transform=False)


def test_filter_design_sums_and_symmetry():
    f4 = eq.design_lowpass_filter(eq.rotation_matrix(0.3), up=4)
    assert f4.shape == (47, 47)
    # Every polyphase component sums to 1/u² (unit DC gain per output phase after gain-u² upsampling).
    for py in range(4):
        for px in range(4):
            assert f4[py::4, px::4].sum().item() == pytest.approx(1 / 16, abs=1e-6)
    f1 = eq.design_lowpass_filter(eq.rotation_matrix(-0.3), up=1)
    assert f1.shape == (11, 11) and f1.sum().item() == pytest.approx(1, abs=1e-6)
    # Point symmetric (the band of a linear map is symmetric under p -> -p).
    torch.testing.assert_close(f1, f1.flip([0, 1]), atol=1e-6, rtol=0)
    # At angle 0 the 2-D response is separable: input and output grids coincide.
    f0 = eq.design_lowpass_filter(eq.rotation_matrix(0.0), up=1).double()
    u, s, _ = torch.linalg.svd(f0)
    assert s[1] / s[0] < 1e-4


def test_reference_transforms_on_band_limited_signal(equivariant):
    """The pixel-space references reproduce an analytically shifted / rotated band-limited image."""
    z = torch.randn([2, equivariant.z_dim], generator=torch.Generator().manual_seed(1))
    ws = equivariant.mapping(z, None)
    syn = equivariant.synthesis
    orig = syn(ws)

    syn.input.transform.copy_(torch.as_tensor(eq.translation_matrix(-3 / RES, 2 / RES)))
    ref, mask = eq.translate_int(orig, 3, -2)
    assert ((ref - syn(ws)).abs() * mask).max() < 1e-5
    assert mask.sum() == (RES - 3) * (RES - 2)

    tx, ty = 2.3, -1.6
    syn.input.transform.copy_(torch.as_tensor(eq.translation_matrix(-tx / RES, -ty / RES)))
    ref, mask = eq.translate_frac(orig, tx, ty)
    err = ((ref - syn(ws)).abs() * mask).max()  # Lanczos-3 itself is accurate to ~1e-3 at these frequencies
    assert err < 1e-2 and mask.sum() == (RES - 5) * (RES - 5)  # x: [5, 32), y: [1, 28)

    angle = 0.7
    syn.input.transform.copy_(torch.as_tensor(eq.rotation_matrix(-angle)))
    img = syn(ws)
    ref, m1 = eq.rotate(orig, angle)
    pseudo, m2 = eq.pseudo_rotate(img, angle)
    mask = m1 * m2
    assert mask.sum() > 0.2 * RES * RES
    assert ((ref - pseudo).abs() * mask).max() < 1e-2
    # Rotating without the band-limited upsampling alignment (no 1/8-pixel correction) would be visibly off;
    # at angle 0 the rotation reduces to the band limit itself.
    ref0, m0 = eq.rotate(orig, 0.0)
    same, ms = eq.pseudo_rotate(orig, 0.0)
    assert ((ref0 - same).abs() * m0 * ms).max() < 5e-3
    syn.input.transform.copy_(torch.eye(3))


@pytest.mark.parametrize("kind,num", [("eqt", 16), ("eqt_frac", 16), ("eqr", 8)])
def test_equivariant_scores_high_nonequivariant_low(equivariant, frozen, kind, num):
    hi = eq.compute_eq(equivariant, kind, num_samples=num, batch_size=2, seed=0)
    lo = eq.compute_eq(frozen, kind, num_samples=num, batch_size=2, seed=0)
    assert hi > 50, hi
    assert lo < 20, lo


def test_eqt_frac_catches_pixel_space_aliasing():
    """A pixel-space nonlinearity commutes with whole-pixel shifts but not with sub-pixel ones (paper §2)."""
    G = ToyG(post=lambda x: torch.sign(x) * 0.5)
    eqt = eq.compute_eq(G, "eqt", num_samples=8, batch_size=2, seed=0)
    frac = eq.compute_eq(G, "eqt_frac", num_samples=8, batch_size=2, seed=0)
    assert eqt > 50 or math.isinf(eqt)
    assert frac < 25, frac


def test_translation_only_generator_fails_eqr():
    """A generator that only follows the translation part of the transform is T- but not R-equivariant."""
    G = ToyG()
    inner = G.synthesis.forward

    def translation_only(ws):
        T = G.synthesis.input.transform
        saved = T.clone()
        T.copy_(torch.as_tensor(eq.translation_matrix(float(T[0, 2]), float(T[1, 2]))))
        try:
            return inner(ws)
        finally:
            T.copy_(saved)

    G.synthesis.forward = translation_only
    assert eq.compute_eq(G, "eqt", num_samples=8, batch_size=2) > 50
    assert eq.compute_eq(G, "eqr", num_samples=4, batch_size=2) < 20


def test_transform_restored_and_deterministic(equivariant):
    before = equivariant.synthesis.input.transform.clone()
    a = eq.eq_sums(equivariant, "eqr", num_samples=3, batch_size=2, seed=5)
    b = eq.eq_sums(equivariant, "eqr", num_samples=3, batch_size=2, seed=5)
    assert a == b and a[1] > 0
    torch.testing.assert_close(equivariant.synthesis.input.transform, before)


def test_errors_are_clear():
    class NoTransform:
        z_dim, c_dim, img_resolution = 4, 0, 16
        synthesis = object()

    with pytest.raises(TypeError, match="synthesis.input.transform"):
        eq.compute_eq(NoTransform(), "eqt", num_samples=1)
    with pytest.raises(ValueError, match="unknown metric 'eqx'"):
        eq.compute_eq(ToyG(), "eqx", num_samples=1)
    assert eq.psnr_from_sums(4.0, 1.0) == pytest.approx(0.0)
    assert eq.psnr_from_sums(0.0, 1.0) == math.inf


# ---------------------------------------------------------------------------------------------- real model


class UpsamplingBaseline(torch.nn.Module):
    """A plain upsampling generator of similar size, fed by StyleGAN3-T's own Fourier input.

    The Fourier features (shared module, hence the same transform buffer) are exactly translation-equivariant;
    after them come 3×3 convolutions with pointwise ReLU on the pixel grid, one nearest-neighbour 2× upsampling
    and a 1×1 ToRGB, then the central crop. Pointwise nonlinearities alias and nearest upsampling pins the content
    to the coarse grid: the textbook non-equivariant design the paper improves on (its StyleGAN2 point). The
    output is rescaled to G's pixel std, since PSNR measures absolute error and a quieter image would score higher.
    """

    def __init__(self, G, hidden=64):
        super().__init__()
        self.input = G.synthesis.input
        self.res = G.img_resolution
        c = self.input.channels
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(c, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Upsample(scale_factor=2, mode="nearest"),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, G.img_channels, 1))
        for m in self.net:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.register_buffer("scale", torch.ones([]))

    def forward(self, ws):
        x = self.net(self.input(ws[:, 0]))
        off = (x.shape[-1] - self.res) // 2  # the central res×res samples cover [-0.5, 0.5]² (docs/algorithm.md "Input layer")
        return x[..., off:off + self.res, off:off + self.res] * self.scale


class BaselineG(torch.nn.Module):
    def __init__(self, G):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = G.z_dim, G.c_dim, G.img_resolution
        self.mapping = G.mapping
        self.synthesis = UpsamplingBaseline(G)


@pytest.mark.slow
def test_stylegan3_t_far_more_translation_equivariant_than_upsampling_baseline():
    models = pytest.importorskip("models")
    torch.manual_seed(0)
    G, _ = models.build("stylegan3-t", 32, channel_base=1024, channel_max=32, z_dim=32, w_dim=32, map_depth=2)
    G.eval()
    base = BaselineG(G).eval()
    with torch.no_grad():
        ws = G.mapping(torch.randn(4, G.z_dim), torch.zeros(4, 0))
        base.synthesis.scale.fill_(float(G.synthesis(ws).std() / base.synthesis(ws).std()))
    assert sum(p.numel() for p in base.synthesis.parameters()) > 0.5 * sum(p.numel() for p in G.synthesis.parameters())
    # One batch (the reference generator is slow on CPU); seed 1 draws a shift of (2, 3) px, an odd shift being a
    # half-pixel one on the baseline's coarse grid.
    sg3 = eq.compute_eq(G, "eqt", num_samples=2, batch_size=2, seed=1)
    plain = eq.compute_eq(base, "eqt", num_samples=2, batch_size=2, seed=1)
    assert sg3 > 50, sg3
    assert sg3 > plain + 20, (sg3, plain)


@pytest.mark.slow
def test_stylegan3_r_far_more_rotation_equivariant_than_t():
    """Config R (1×1 convs, radial filters) is built to be rotation-equivariant, T is not (paper §3.2)."""
    models = pytest.importorskip("models")
    scores = {}
    for preset in ("stylegan3-r", "stylegan3-t"):
        torch.manual_seed(0)
        G, _ = models.build(preset, 32, channel_base=1024, channel_max=32, z_dim=32, w_dim=32, map_depth=2)
        scores[preset] = eq.compute_eq(G.eval(), "eqr", num_samples=2, batch_size=2, seed=3)
    assert scores["stylegan3-r"] > 50 and scores["stylegan3-r"] > scores["stylegan3-t"] + 20, scores
