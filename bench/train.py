"""Throughput of the full training step (Gmain + Dmain + Dreg amortised over its interval of 16), docs/algorithm.md "Training phases".

    python bench/train.py                                   # CPU, 64x64, 1 and 2 workers (gloo processes)
    python bench/train.py --device cuda --res 256 --cbase 32768 --cmax 512 --batch 32 --workers 1

For each worker count the same global batch is split over the workers (torch.distributed, gloo on CPU,
NCCL on CUDA; the loop's own gradient all-reduce). Per step count: one warm-up step (with Dreg, it is
step 0), then `--steps` timed steps with Dreg and `--steps` without; the amortised step time is
t(no reg) + (t(reg) - t(no reg)) / 16. Prints images/s, s/kimg and the ratio to the first worker count
(the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from pipeline.training.config import TrainConfig  # noqa: E402
from pipeline.training.loop import build_networks  # noqa: E402
from pipeline.training.trainer import Trainer  # noqa: E402


def make_config(a, workers: int) -> TrainConfig:
    cfg = TrainConfig().replace(
        model={"preset": a.cfg, "cbase": a.cbase, "cmax": a.cmax},
        schedule={"batch": a.batch}, aug={"mode": a.aug}, run={"workers": workers})
    return cfg.resolved(resolution=a.res, img_channels=3, c_dim=0)


def _timed_step(t: Trainer, img, c, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    t.step(img, c)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_worker(rank: int, world: int, a, store: str, out: str) -> None:
    if world > 1:
        dist.init_process_group("nccl" if a.device == "cuda" else "gloo", init_method=f"file://{store}",
                                rank=rank, world_size=world)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = torch.device(a.device if a.device == "cpu" else f"cuda:{rank}")
    cfg = make_config(a, world)
    G, D = build_networks(cfg)
    t = Trainer(cfg, G, D, device, rank, world)
    n = cfg.worker_batch
    img = torch.randint(0, 256, [n, 3, a.res, a.res], dtype=torch.uint8)
    c = torch.zeros([n, 0])
    _timed_step(t, img, c, device)  # warm-up (step 0 runs Dreg)
    reg, noreg = [], []
    while len(reg) < a.steps or len(noreg) < a.steps:
        has_reg = t.batch_idx % cfg.optim.d_reg_interval == 0
        if (has_reg and len(reg) >= a.steps) or (not has_reg and len(noreg) >= a.steps):
            t.batch_idx += 1 if has_reg else cfg.optim.d_reg_interval - t.batch_idx % cfg.optim.d_reg_interval
            continue
        (reg if has_reg else noreg).append(_timed_step(t, img, c, device))
    if rank == 0:
        t_reg, t_noreg = sorted(reg)[len(reg) // 2], sorted(noreg)[len(noreg) // 2]
        amortised = t_noreg + (t_reg - t_noreg) / cfg.optim.d_reg_interval
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        torch.save({"t_reg": t_reg, "t_noreg": t_noreg, "step": amortised, "mem": mem}, out)
    if world > 1:
        dist.destroy_process_group()


def measure(a, world: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out, store = f"{tmp}/result.pt", f"{tmp}/store"
        if world == 1:
            run_worker(0, 1, a, store, out)
        else:
            mp.spawn(run_worker, args=(world, a, store, out), nprocs=world, join=True)
        return torch.load(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--cfg", default="stylegan3-t", choices=["stylegan3-t", "stylegan3-r"])
    p.add_argument("--res", type=int, default=64, help="resolution, px")
    p.add_argument("--cbase", type=int, default=2048, help="channel base (see --cbase of pipeline.train)")
    p.add_argument("--cmax", type=int, default=64, help="channel max")
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--aug", default="ada", choices=["ada", "fixed", "noaug"])
    p.add_argument("--steps", type=int, default=2, help="timed steps with and without Dreg (median)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts; the first is the baseline")
    a = p.parse_args()
    counts = [int(w) for w in a.workers.split(",")]
    print(f"device {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else f'{os.cpu_count()} CPUs'}), "
          f"{a.cfg} {a.res}x{a.res} cbase {a.cbase} cmax {a.cmax}, batch {a.batch}, aug {a.aug}, torch {torch.__version__}")
    print(f"{'workers':>7} {'step+Dreg s':>12} {'step s':>8} {'amortised s':>12} {'img/s':>8} {'s/kimg':>9} "
          f"{'vs base':>8} {'GPU GB':>7}")
    base = None
    for w in counts:
        r = measure(a, w)
        ips = a.batch / r["step"]
        base = base or ips
        print(f"{w:>7} {r['t_reg']:>12.2f} {r['t_noreg']:>8.2f} {r['step']:>12.2f} {ips:>8.2f} "
              f"{1000 / ips:>9.1f} {ips / base:>7.2f}x {r['mem']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
