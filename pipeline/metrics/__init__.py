"""Quality and equivariance metrics (docs/algorithm.md "Metrics"): EQ-T, EQ-T_frac, EQ-R, SWD, FID, KID and power spectra.

Public API:
    compute_metrics(G, names, num_samples, real=None, *, detector=None, cache_dir=DEFAULT_CACHE_DIR,
                    batch_size=4, seed=0, device=None, num_real=None, spectrum_path=None, progress=False,
                    log=print) -> {name: value}
    equivariance.compute_eq(G, kind='eqt'|'eqt_frac'|'eqr', num_samples, batch_size=4, seed=0) -> dB
    equivariance.eq_sums(...) -> (Σ err, Σ mask)   (add across workers, then psnr_from_sums)
    swd.compute_swd(real_uint8, fake_uint8, ...) -> float (×1e3), swd.swd_levels(...) -> {res: value}
    fid.compute_fid / fid.compute_kid / fid.fid_kid (None when no detector), fid.load_detector,
    fid.frechet_distance, fid.kernel_inception_distance
    spectrum.mean_power_spectrum, spectrum.radial_profile, spectrum.save_spectrum_plot
    RealImages.from_tensor / from_uri, generate_images, to_uint8
CLI: python -m pipeline.metrics --help
"""

from pipeline.metrics.core import (ALL_METRICS, DATA_METRICS, DEFAULT_CACHE_DIR, EQ_METRICS, RealImages,
                                   compute_metrics, generate_images, parse_metric_names, to_uint8)

__all__ = ["ALL_METRICS", "DATA_METRICS", "DEFAULT_CACHE_DIR", "EQ_METRICS", "RealImages", "compute_metrics",
           "generate_images", "parse_metric_names", "to_uint8"]
