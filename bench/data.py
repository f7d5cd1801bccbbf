"""Input-pipeline throughput: our Ray Data reader vs plain webdataset + torch DataLoader, same shards, same
PNG decode (`pipeline.data.image_codec.decode_png_into`), same run.

    python bench/data.py                      # 64 and 256 px, demo:emoji shards built into ./.cache/bench-data
    python bench/data.py --resolutions 64 --passes 2 --batch 64

Each side delivers uint8 [B, C, H, W] torch tensors to this process through a 4-batch shuffle buffer, with
shard-order shuffling: ours is `pipeline.data.ImageStream` (what training iterates; one Ray Data execution
covers `pipeline.data.default_passes(shards)` passes, 52 for the 5 demo shards). Each reads the set once
untimed (worker start-up), then `--passes` times timed (default: one execution's worth plus one pass, so a
restart between executions is in the timing). Prints a table: images/s for
each side and the ratios; the DataLoader runs twice, with its workers at normal priority and at Ray's worker
niceness (15), which matters when other jobs compete for the CPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data import ImageStream, default_passes, ensure_demo_shards  # noqa: E402
from pipeline.data.image_codec import decode_png_into  # noqa: E402
from pipeline.data.manifest import dataset_info  # noqa: E402


# Ray starts its worker processes at this niceness (its `worker_niceness` default), so on a busy host its
# decode tasks yield to everything else; the second baseline runs the DataLoader workers the same way.
RAY_WORKER_NICENESS = 15


def ray_rate(uri: str, batch: int, passes: int) -> float:
    """Images/s of `ImageStream` (what training iterates) over `passes` passes after one warm-up pass."""
    stream = ImageStream(uri, batch)
    it = iter(stream)
    per_pass = stream.info.num_images // batch
    for _ in range(per_pass):
        next(it)
    t0 = time.perf_counter()
    n = sum(len(next(it)["img"]) for _ in range(per_pass * passes))
    rate = n / (time.perf_counter() - t0)
    it.close()
    return rate


def _decode_sample(sample: dict, res: int, ch: int) -> torch.Tensor:
    hwc = np.empty((res, res, ch), dtype=np.uint8)
    decode_png_into(sample["png"], hwc)
    return torch.from_numpy(hwc).permute(2, 0, 1).contiguous()


class _Decode:
    def __init__(self, res: int, ch: int):
        self.res, self.ch = res, ch

    def __call__(self, sample):
        return _decode_sample(sample, self.res, self.ch)


class _Nice:
    """DataLoader worker_init_fn: lower the worker's priority like Ray's (its workers run at niceness 15)."""

    def __init__(self, increment: int):
        self.increment = increment

    def __call__(self, worker_id: int) -> None:
        os.nice(self.increment)


def make_loader(uri: str, batch: int, workers: int, nice: int = 0):
    import webdataset as wds

    info = dataset_info(uri)
    urls = info.shard_uris()
    # Plain webdataset over the same files: shard shuffle, sample shuffle buffer, per-sample decode.
    pipe = (wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=None, workersplitter=wds.split_by_worker,
                           empty_check=False)
            .shuffle(4 * batch).map(_Decode(info.resolution, info.channels)))
    return torch.utils.data.DataLoader(pipe, batch_size=batch, num_workers=workers, persistent_workers=True,
                                       prefetch_factor=4, worker_init_fn=_Nice(nice))


def loader_rate(loader, passes: int) -> float:
    """Images/s of the DataLoader over `passes` passes, after one warm-up pass (workers persist)."""
    sum(len(b) for b in loader)
    t0 = time.perf_counter()
    n = sum(len(b) for _ in range(passes) for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="64,256", help="comma-separated sizes (default: 64,256)")
    parser.add_argument("--batch", type=int, default=64, help="batch size in images (default: 64)")
    parser.add_argument("--passes", type=int, default=None,
                        help="timed passes over the set per side (default: the passes of one Ray Data execution + 1)")
    parser.add_argument("--max-images", type=int, default=None, help="images in the set (default: all 4,009)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers (default: CPUs)")
    parser.add_argument("--cache", default=".cache/bench-data", help="where the shards are built")
    args = parser.parse_args()

    # Keep Ray on loopback and without token auth (docs/platform.md "Ray"); set before Ray reads them.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    for attempt in range(3):  # Ray gives its raylet 30 s to start; a busy shared host can need longer
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _temp_dir=tempfile.mkdtemp(prefix="rbench-", dir="/tmp"))
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"ray.init failed ({exc}); retrying", file=sys.stderr)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rows = []
    try:
        for res in [int(r) for r in args.resolutions.split(",")]:
            uri = ensure_demo_shards(args.cache, res, max_images=args.max_images)
            info = dataset_info(uri)
            passes = args.passes or default_passes(len(info.shards)) + 1
            plain = loader_rate(make_loader(uri, args.batch, args.workers), passes)
            plain_nice = loader_rate(make_loader(uri, args.batch, args.workers, nice=RAY_WORKER_NICENESS), passes)
            ours = ray_rate(uri, args.batch, passes)
            rows.append((res, info.num_images, passes, plain, plain_nice, ours))
    finally:
        ray.shutdown()
    print(f"\nbatch {args.batch}, {os.cpu_count()} CPUs, DataLoader workers {args.workers}")
    print("| resolution | images | timed passes | DataLoader img/s | DataLoader, workers at nice 15 "
          "| Ray Data (ours) img/s | ratio | ratio, same niceness |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for res, n, passes, plain, plain_nice, ours in rows:
        print(f"| {res}x{res} | {n} | {passes} | {plain:,.0f} | {plain_nice:,.0f} | {ours:,.0f} | {ours / plain:.2f}x "
              f"| {ours / plain_nice:.2f}x |")


if __name__ == "__main__":
    main()
