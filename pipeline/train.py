"""Train StyleGAN3 on Ray: `python -m pipeline.train [flags]` (docs/algorithm.md "Training"; flags spelled like the official train.py).

Laptop / this 2-core machine (no flags = the embedded default: shards of the 100 bundled smiley-face emoji at
16x16 are built into ~/.cache/stylegan3-ray, a local Ray starts, a small StyleGAN3-T trains on the CPU for a
few minutes until its fakes are recognisably faces, fakes grids, progress.png and checkpoints land in
outputs/runs/, metrics in MLflow at ./mlflow.db):

    python -m pipeline.train

One node with 8 GPUs (an FFHQ-like set at 256x256, the official recommended settings):

    python -m pipeline.dataset build ~/ffhq256.zip s3://bucket/ffhq256
    python -m pipeline.train --cfg stylegan3-t --data s3://bucket/ffhq256 --batch 32 --gamma 2 \\
        --workers 8 --mirror 1 --storage s3://bucket/runs --run-name ffhq256-t

Many nodes (a Ray cluster: `ray up ray_cluster.yaml`, or KubeRay from infra/): submit the same command as a job;
running it again with the same --run-name and --storage continues from the latest checkpoint:

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m pipeline.train --cfg stylegan3-r --data s3://bucket/afhq512 --batch 32 --gamma 16.4 \\
        --workers 16 --storage s3://bucket/runs --run-name afhq512-r

Fine-tune from weights (a NEW run; ADA kimg 100, no EMA ramp-up, no blur, docs/algorithm.md "Official training options"):

    python -m pipeline.train --data s3://bucket/metfaces1024 --gamma 6.6 --kimg 5000 --snap 10 \\
        --resume models:/stylegan3-ffhq-t@champion --workers 8
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.data.demo import DEMO_CACHE, DEMO_DATA, DEMO_RESOLUTION
from pipeline.ray_session import init_ray, local_ray_env
from pipeline.training.config import ConfigError
from pipeline.training.embedded import demo_argv
from pipeline.training.flags import add_train_flags, config_from_args

# The launch library (pipeline.training.launch, .report) loads torch, Ray and the data reader: it is imported in
# main, so that `--help` and a bad flag answer without those seconds of start-up.


def make_parser() -> argparse.ArgumentParser:
    """pipeline.train's command line (the flag table is pipeline.training.flags)."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train StyleGAN3 (T or R) on a Ray cluster; with no arguments, a small demo run on this "
                    "machine. Same --run-name + --storage = continue the run from its latest checkpoint.",
        epilog=__doc__.split("\n", 2)[2])
    return add_train_flags(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    local_ray_env()
    full = demo_argv(argv, make_parser())  # None: the flags name other data than a bundled demo set
    args = make_parser().parse_args(full if full is not None else argv)
    source = args.data or DEMO_DATA
    cfg = config_from_args(args)
    from pipeline.training.launch import choose_device, fit, latest_checkpoint, prepare
    from pipeline.training.report import done_lines, run_lines

    try:
        cfg.validate()  # flag-only checks first: fail before building or reading any data
        if full is not None:
            from pipeline.data import ensure_demo_shards

            print(f"demo data: {source} shards at {DEMO_RESOLUTION}x{DEMO_RESOLUTION} in {DEMO_CACHE}"
                  + ("" if argv else " (the embedded default)"), flush=True)
            cfg = cfg.replace(data={"uri": ensure_demo_shards(DEMO_CACHE, DEMO_RESOLUTION, source=source)})
        cfg, info = prepare(cfg)  # resolved once, here: network, tracking URI, run name
        init_ray()
        cfg = choose_device(cfg)  # prints the choice line: GPUs or CPUs, and why
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(run_lines(cfg, info, args.gamma, latest_checkpoint(cfg))), flush=True)
    start = time.time()
    result = fit(cfg, info)
    wall = time.time() - start
    if result.error is not None:
        print(f"error: training failed after {wall:.0f} s: {result.error}", file=sys.stderr)
        return 1
    print("\n".join(done_lines(cfg, result.metrics, wall, latest_checkpoint(cfg), argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
