"""Throughput of the metrics (pipeline.metrics), as ratios against plain generation measured in the same run.

    python bench/metrics.py                       # CPU, 64×64, tiny StyleGAN3-T
    python bench/metrics.py --device cuda --res 256 --cbase 16384 --cmax 256 --num 64 --batch 16

Rows (samples/s; "x gen" = samples/s divided by plain generation's samples/s at the same batch):
- generate      G(z) -> uint8 images, the baseline every data metric pays once
- eqt/eqt_frac/eqr  the whole metric: two synthesis passes per sample plus the pixel-space reference
- eqr_reference the rotation reference alone (filter design + 4x upsampling + bilinear + pseudo-rotation) on
                ready images: the part that is not the generator
- swd           SWD (128 descriptors/image, 4 x 512 directions) between two ready uint8 sets
- fid_stats / kid  one-off costs at Inception's 2048 dims (seconds, not per sample): Fréchet distance with
                scipy's sqrtm, and KID's 100 subsets of 1000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models  # noqa: E402
from pipeline.metrics import equivariance as eq  # noqa: E402
from pipeline.metrics import fid, swd  # noqa: E402
from pipeline.metrics.core import generate_images  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls, seconds."""
    best = math.inf
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=64, help="image resolution (default 64)")
    p.add_argument("--cbase", type=int, default=1024, help="G channel_base (default 1024: a tiny G)")
    p.add_argument("--cmax", type=int, default=32, help="G channel_max (default 32)")
    p.add_argument("--num", type=int, default=8, help="samples per measurement (default 8)")
    p.add_argument("--batch", type=int, default=4, help="generator batch (default 4, as the paper)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--swd-num", type=int, default=256, help="images per set for the SWD row (default 256)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    G, _ = models.build("stylegan3-t", args.res, channel_base=args.cbase, channel_max=args.cmax, z_dim=64,
                        w_dim=64, map_depth=2)
    G = G.to(device).eval()
    n, b = args.num, args.batch
    rows = []
    t_gen = timed(lambda: generate_images(G, n, batch_size=b, device=device))
    gen_rate = n / t_gen
    rows.append(("generate", gen_rate, 1.0))
    for kind in eq.KINDS:
        t = timed(lambda: eq.compute_eq(G, kind, n, batch_size=b, device=device))
        rows.append((kind, n / t, n / t / gen_rate))

    imgs = torch.randn(b, 3, args.res, args.res, device=device) * 0.5
    angles = np.linspace(-math.pi, math.pi, max(n // b, 1), endpoint=False)

    def reference():
        for a in angles:
            eq.rotate(imgs, float(a))
            eq.pseudo_rotate(imgs, float(a))

    t = timed(reference)
    rows.append(("eqr_reference", len(angles) * b / t, len(angles) * b / t / gen_rate))

    real = torch.randint(0, 256, (args.swd_num, 3, args.res, args.res), dtype=torch.uint8)
    fake = torch.randint(0, 256, (args.swd_num, 3, args.res, args.res), dtype=torch.uint8)
    t = timed(lambda: swd.compute_swd(real, fake))
    rows.append(("swd", args.swd_num / t, args.swd_num / t / gen_rate))

    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(2000, 2048)), rng.normal(size=(2000, 2048)) + 0.1
    t_fid = timed(lambda: fid.frechet_distance(*fid.feature_stats(fa), *fid.feature_stats(fb)))
    t_kid = timed(lambda: fid.kernel_inception_distance(fa, fb))

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, device {device}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"G: stylegan3-t {args.res}px cbase {args.cbase} cmax {args.cmax}; {n} samples, batch {b}")
    print(f"{'metric':<15}{'samples/s':>12}{'x gen':>9}")
    for name, rate, ratio in rows:
        print(f"{name:<15}{rate:>12.2f}{ratio:>9.2f}")
    print(f"{'fid_stats':<15}{t_fid:>11.2f}s  (2000+2000 features, 2048-d, incl. sqrtm)")
    print(f"{'kid':<15}{t_kid:>11.2f}s  (100 subsets of 1000, 2048-d)")


if __name__ == "__main__":
    main()
