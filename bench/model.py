"""Benchmark: StyleGAN3 G and StyleGAN2 D on CPU (or CUDA), forward and forward+backward, and the
three training loss phases (Gmain, Dmain, Dreg) when pipeline.training.loss is importable.

Each measurement runs in a fresh subprocess so that its peak RSS is its own. Times are the median of
--repeats runs after one warm-up, in seconds per call.

The networks are built with the ops backend ``--impl`` (docs/ops.md "Backends"; 'auto' = the CPU path on CPU,
Triton on CUDA), passed to models.build -- nothing is patched. ``--baseline IMPL`` also runs every measure with
networks built on another backend, in the same command: 'ref' is the ops' definitions (upfirdn2d the direct way:
zero-insert, pad, a depthwise convolution at the full upsampled rate, then keep every `down`-th sample -- how a
straightforward implementation works, the official code's CPU path among them: docs/algorithm.md "Official code
on CPU"); 'cpu' the CPU path (on CUDA tensors too). Every backend computes the same networks (the output check is
printed). Every measurement process starts with ops.CPU_PROCESS_ENV, as the training workers do. The official
code's own figures (docs/algorithm.md "Official code on CPU", measured elsewhere) are printed beside them for
orientation only.

    python bench/model.py                      # 64x64, T, cbase 8192, cmax 512, batch 4, CPU
    python bench/model.py --preset stylegan3-r --repeats 5
    python bench/model.py --baseline ref --measures G_fwd,G_fwd_bwd
    python bench/model.py --device cuda --resolution 256 --batch 32 --baseline cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops import CPU_PROCESS_ENV, IMPLS  # noqa: E402  (the worker process environment; see ops/__init__.py)

MEASURES = ["G_fwd", "G_fwd_bwd", "D_fwd", "D_fwd_bwd", "Gmain", "Dmain", "Dreg"]

# Official code, CPU reference ops, 64x64, cbase 8192 / cmax 512, batch 4, median of 3 (docs/algorithm.md "Official code on CPU").
SPEC_BASELINE = {
    "stylegan3-t": {"G_fwd": 8.76, "G_fwd_bwd": 19.07, "D_fwd": 0.10, "D_fwd_bwd": 0.31,
                    "Gmain": 18.71, "Dmain": 6.67, "Dreg": 0.91},
    "stylegan3-r": {"G_fwd": 14.84, "G_fwd_bwd": 40.47, "D_fwd": 0.45, "D_fwd_bwd": 0.48,
                    "Gmain": 40.61, "Dmain": 17.13, "Dreg": 1.08},
}
SPEC_BASELINE_PEAK_RSS_GB = 11.0


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2   # Linux: KiB


def run_one(args) -> dict:
    import torch

    import models

    torch.manual_seed(0)
    device = torch.device(args.device)
    G, D = models.build(args.preset, args.resolution, batch_size=args.batch, channel_base=args.cbase,
                        channel_max=args.cmax, impl=args.impl)
    G, D = G.to(device), D.to(device)
    n = args.batch
    z = torch.randn(n, G.z_dim, device=device)
    c = torch.zeros(n, 0, device=device)
    real = torch.randn(n, G.img_channels, G.img_resolution, G.img_resolution, device=device).clamp(-1, 1)
    name = args.only

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if name in ("Gmain", "Dmain", "Dreg"):
        from pipeline.training.loss import StyleGAN2Loss
        loss = StyleGAN2Loss(G, D, r1_gamma=1.0)

        def step():
            G.requires_grad_(name == "Gmain")
            D.requires_grad_(name != "Gmain")
            loss.accumulate_gradients(name, real, c, z, c, gain=16.0 if name == "Dreg" else 1.0, cur_nimg=0)
    elif name == "G_fwd":
        def step():
            with torch.no_grad():
                G(z, c)
    elif name == "G_fwd_bwd":
        def step():
            G(z, c).square().mean().backward()
    elif name == "D_fwd":
        def step():
            with torch.no_grad():
                D(real, c)
    elif name == "D_fwd_bwd":
        def step():
            D(real, c).sum().backward()
    else:
        raise SystemExit(f"unknown measure {name!r}")

    times, cpu_times = [], []
    load_before = os.getloadavg()[0]
    for i in range(args.repeats + 1):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        if i > 0:                                   # first run is the warm-up
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
    with torch.no_grad():  # a fixed output, to check that both backends compute the same networks
        torch.manual_seed(1)
        check = G(torch.randn(2, G.z_dim, device=device), c[:2]).double().sum().item()
    out = {"measure": name, "impl": args.impl, "median_s": statistics.median(times), "runs_s": times, "check": check,
           "median_cpu_s": statistics.median(cpu_times), "loadavg_1min": [load_before, os.getloadavg()[0]],
           "peak_rss_gb": _peak_rss_gb(),
           "G_params": sum(p.numel() for p in G.parameters()), "D_params": sum(p.numel() for p in D.parameters())}
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="stylegan3-t", choices=["stylegan3-t", "stylegan3-r"], help="network config")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    p.add_argument("--cbase", type=int, default=8192, help="channel base before R's doubling (--cbase)")
    p.add_argument("--cmax", type=int, default=512, help="channel max before R's doubling (--cmax)")
    p.add_argument("--batch", type=int, default=4, help="images per call")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measure (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--measures", default=",".join(MEASURES), help=f"comma-separated subset of {MEASURES}")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--impl", default="auto", choices=IMPLS,
                   help="ops backend of the networks (docs/ops.md 'Backends'): 'auto' = the CPU path on CPU, Triton "
                        "on CUDA")
    p.add_argument("--baseline", default="none", choices=["none"] + [i for i in IMPLS if i != "auto"],
                   help="also run every measure with networks on this backend, in the same command (see above)")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)   # internal: one measure, in a subprocess
    args = p.parse_args()

    if args.only:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return

    base = [sys.executable, __file__, "--preset", args.preset, "--resolution", str(args.resolution),
            "--cbase", str(args.cbase), "--cmax", str(args.cmax), "--batch", str(args.batch),
            "--repeats", str(args.repeats), "--device", args.device]
    baseline_kind = args.baseline
    run_baseline = args.baseline != "none"
    results, baseline_results = [], []
    baseline = SPEC_BASELINE.get(args.preset, {}) if (args.resolution, args.cbase, args.cmax, args.batch,
                                                      args.device) == (64, 8192, 512, 4, "cpu") else {}
    print(f"# {args.preset} {args.resolution}x{args.resolution} cbase {args.cbase} cmax {args.cmax} batch "
          f"{args.batch} on {args.device}, median of {args.repeats} after 1 warm-up; torch threads default, "
          f"{os.cpu_count()} CPUs visible")
    print(f"{'measure':<10} {args.impl + ' [s]':>9} {baseline_kind + ' [s]':>10} {'speed-up':>9} {'RSS ours':>9} "
          f"{'RSS base':>10} "
          f"{'official*':>10} {'load avg':>9}")

    def measure(name: str, baseline_run: bool):
        impl = baseline_kind if baseline_run else args.impl
        # the process environment the training workers get (ops.CPU_PROCESS_ENV), for every backend
        env = {**os.environ, "PYTHONPATH": str(ROOT), **CPU_PROCESS_ENV}
        proc = subprocess.run(base + ["--only", name, "--impl", impl], capture_output=True, text=True, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name:<10} failed{' (baseline)' if baseline_run else ''}: "
                  f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            return None
        return json.loads(line[len("RESULT "):])

    for name in [m.strip() for m in args.measures.split(",") if m.strip()]:
        r = measure(name, False)
        if r is None:
            continue
        b = measure(name, True) if run_baseline else None
        results.append(r)
        if b is not None:
            baseline_results.append(b)
            same = abs(r["check"] - b["check"]) <= 1e-4 * max(1.0, abs(b["check"]))
            if not same:
                print(f"  WARNING: outputs differ between the two backends: {r['check']} vs {b['check']}")
        load = "{:.0f}-{:.0f}".format(r["loadavg_1min"][0], (b or r)["loadavg_1min"][1])
        ref = baseline.get(name)
        print(f"{name:<10} {r['median_s']:>9.3f} {b['median_s'] if b else float('nan'):>10.3f} "
              f"{(b['median_s'] / r['median_s']) if b else float('nan'):>8.2f}x {r['peak_rss_gb']:>9.2f} "
              f"{b['peak_rss_gb'] if b else float('nan'):>10.2f} {ref if ref else '-':>10} {load:>9}", flush=True)

    by = {r["measure"]: r for r in results}
    by_b = {r["measure"]: r for r in baseline_results}
    if {"Gmain", "Dmain", "Dreg"} <= set(by):
        def step(d):
            return d["Gmain"]["median_s"] + d["Dmain"]["median_s"] + d["Dreg"]["median_s"] / 16

        line = f"{'step':<10} {step(by):>9.3f}"
        if {"Gmain", "Dmain", "Dreg"} <= set(by_b):
            line += (f" {step(by_b):>10.3f} {step(by_b) / step(by):>8.2f}x "
                     f"{max(by[k]['peak_rss_gb'] for k in ('Gmain', 'Dmain', 'Dreg')):>9.2f} "
                     f"{max(by_b[k]['peak_rss_gb'] for k in ('Gmain', 'Dmain', 'Dreg')):>10.2f}")
        if baseline:
            line += f" {baseline['Gmain'] + baseline['Dmain'] + baseline['Dreg'] / 16:>10.2f}"
        print(line + "   (Gmain + Dmain + Dreg/16: one training step, lazy R1 amortised)")
    if baseline:
        print(f"* official code, docs/algorithm.md 'Official code on CPU' (measured elsewhere on a 2-core machine of this kind; peak RSS "
              f"~{SPEC_BASELINE_PEAK_RSS_GB:.0f} GB over all measures)")
    if results:
        print(f"G params {results[0]['G_params']:,}  D params {results[0]['D_params']:,}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results,
                                         "baseline": baseline_results}, indent=2))


if __name__ == "__main__":
    main()
