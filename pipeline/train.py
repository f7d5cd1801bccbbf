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
import os
import shlex
import sys
import time

from pipeline.data.demo import DEMO_CACHE, DEMO_DATA, DEMO_RESOLUTION
from pipeline.ray_session import init_ray, local_ray_env
from pipeline.training.config import ConfigError
from pipeline.training.flags import add_train_flags, config_from_args, gamma_note

__all__ = ["DEMO_ARGS", "DEMO_RUN_NAME", "config_from_args", "demo_argv", "demo_run_name", "gamma_note", "main",
           "make_parser"]

# The embedded default: a small StyleGAN3-T at 16x16 on the 100 smiley faces of the bundled set, which learns
# visibly (round yellow faces with eyes and mouths, the SWD falling to about a third) within 10 minutes on a
# 2-core CPU; what was tried and measured is in docs/training.md "The embedded default". Same meaning as the flags
# of the same names.
DEMO_ARGS = ["--cfg", "stylegan3-t", "--batch", "8", "--cbase", "1024", "--cmax", "32", "--mirror", "1",
             "--glr", "0.005", "--dlr", "0.005", "--kimg", "6", "--tick", "0.5", "--snap", "2", "--keep", "2",
             "--workers", "1", "--cpus-per-worker", "1"]
DEMO_RUN_NAME = "demo-emoji-faces16-t"  # = demo_run_name(DEMO_DATA)


def demo_run_name(source: str) -> str:
    """The readable run name of a demo set under the embedded default's settings, e.g. demo-emoji-faces16-t."""
    return f"{source.replace(':', '-')}{DEMO_RESOLUTION}-t"


# Flags that leave the demo's training trajectory as it is (the derived run name ignores them too): with only
# these on top of the embedded default, the run keeps the name DEMO_RUN_NAME, so `--kimg 2` continues it.
SAME_RUN_FLAGS = {"--kimg", "--tick", "--snap", "--keep", "--workers", "--cpus-per-worker", "--use-gpu",
                  "--storage", "--max-failures", "--metrics", "--quality", "--experiment", "--model-name", "--tracking",
                  "--data"}


def make_parser() -> argparse.ArgumentParser:
    """pipeline.train's command line (the flag table is pipeline.training.flags)."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train StyleGAN3 (T or R) on a Ray cluster; with no arguments, a small demo run on this "
                    "machine. Same --run-name + --storage = continue the run from its latest checkpoint.",
        epilog=__doc__.split("\n", 2)[2])
    return add_train_flags(p)


def demo_argv(argv: list[str]) -> list[str] | None:
    """The flags of a run on the bundled demo set (no --data, or --data demo:emoji): the embedded default's
    settings, then the user's flags over them; None when `argv` names other data."""
    from pipeline.data.sources import DEMO_SETS

    parsed = make_parser().parse_args(argv)
    if parsed.data is not None and parsed.data not in DEMO_SETS:
        return None
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    # Only flags that keep the trajectory: the run keeps its readable name (and resumes with a larger --kimg).
    name = ["--run-name", demo_run_name(parsed.data or DEMO_DATA)] if given <= SAME_RUN_FLAGS else []
    full = DEMO_ARGS + name + list(argv)
    if "--model-name" not in given:  # the registered name the README's commands use: stylegan3-emoji-t (or -r)
        full += ["--model-name", "stylegan3-emoji-" + make_parser().parse_args(full).cfg.removeprefix("stylegan3-")]
    return full


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    local_ray_env()
    full = demo_argv(argv)
    demo = full is not None
    args = make_parser().parse_args(full if demo else argv)
    source = args.data or DEMO_DATA
    if demo:
        args.data = None
    cfg = config_from_args(args)
    from pipeline.training.launch import choose_device, fit, latest_checkpoint, prepare, run_dir

    try:
        cfg.validate()  # flag-only checks first: fail before building or reading any data
        if demo:
            from pipeline.data import ensure_demo_shards

            print(f"demo data: {source} shards at {DEMO_RESOLUTION}x{DEMO_RESOLUTION} in {DEMO_CACHE}"
                  + ("" if argv else " (the embedded default)"), flush=True)
            uri = ensure_demo_shards(DEMO_CACHE, DEMO_RESOLUTION, source=source)
            cfg = cfg.replace(data={"uri": uri})
        cfg, info = prepare(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.run.callbacks:
        from pipeline.tracking import tracking_uri

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # resolved here: workers run in other directories
    init_ray()
    try:
        cfg = choose_device(cfg)  # prints the choice line: GPUs or CPUs, and why
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    previous = latest_checkpoint(cfg)
    print(f"run {cfg.run.run_name}: {cfg.model.preset} {cfg.model.resolution}x{cfg.model.resolution}, "
          f"{info.num_images} images from {cfg.data.uri}, batch {cfg.schedule.batch} on {cfg.run.workers} "
          f"worker(s), gamma {cfg.loss.gamma:g}{gamma_note(args.gamma)}, {cfg.schedule.kimg:g} kimg", flush=True)
    print(f"  checkpoints: {run_dir(cfg)}" + (f"  (resuming from {previous})" if previous else ""), flush=True)
    if cfg.data.cond and info.label_counts is None:
        print(f"  note: the manifest of {cfg.data.uri} predates label counts: fake labels come from each real "
              "batch; rebuild the set (python -m pipeline.dataset build) to draw them from the whole set", flush=True)
    start = time.time()
    result = fit(cfg, info)
    wall = time.time() - start
    if result.error is not None:
        print(f"error: training failed after {wall:.0f} s: {result.error}", file=sys.stderr)
        return 1
    last = latest_checkpoint(cfg)
    kimg = (result.metrics or {}).get("kimg")
    print(f"\ndone in {wall / 60:.1f} min" + (f" at {kimg:g} kimg" if kimg is not None else ""))
    print(f"  latest checkpoint: {last}")
    if last:
        print(f"  fakes grid:        {last}/fakes.png")
    bad = int((result.metrics or {}).get("corrupt_skipped") or 0)
    if bad:
        from pipeline.training.checkpoint import CORRUPT_FILE

        print(f"  bad samples:       {bad} skipped, never decoded again (list: {last}/{CORRUPT_FILE})")
    if cfg.run.callbacks:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        print(f"  MLflow:            {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    for line in progress_summary(run_dir(cfg)):
        print(line)
    print("next:")
    if last:
        print(f"  python -m pipeline.generate --model {last} --seeds 0-7 --outdir outputs/fakes")
    again = [a for i, a in enumerate(argv)
             if not a.startswith("--kimg=") and a != "--kimg" and (i == 0 or argv[i - 1] != "--kimg")]
    again += ["--kimg", f"{cfg.schedule.kimg * 10:g}"]
    print("  python -m pipeline.train " + shlex.join(again) + "   # continues this run to a larger --kimg")
    return 0


def progress_summary(directory: str) -> list[str]:
    """The summary's last lines: the quality metric at its first and last snapshot, and where progress.png is."""
    import json

    from pipeline import storage
    from pipeline.training.progress import HISTORY_FILE, PROGRESS_FILE, QUALITY_KEY, History

    png, data = storage.join(directory, PROGRESS_FILE), storage.join(directory, HISTORY_FILE)
    if not storage.exists(png):
        return []
    lines = []
    if storage.exists(data):
        q = History(json.loads(storage.read_bytes(data))).quality()
        if q:
            lines.append(f"  quality (SWD):     {q[0][1]:.1f} at {q[0][0]:g} kimg -> {q[-1][1]:.1f} at {q[-1][0]:g} kimg  "
                         f"(x1e3 on fixed reals, lower is better; MLflow {QUALITY_KEY.replace('/', '.')})")
    return lines + [f"  progress picture:  {png}  (quality and losses vs kimg, latest fakes)"]


if __name__ == "__main__":
    sys.exit(main())
