"""Benchmark: ops reference path vs Triton kernels, per StyleGAN3-T and -R synthesis layer (spec §c).

For every layer of StyleGAN3-T/-R at 256x256 (batch 32 by default) it times filtered_lrelu, its bias_act-shaped
input step and the upfirdn2d up stage, forward and forward+backward, in the layer's dtype (fp16 where the model
uses it), with impl='ref' and impl='triton' in the same process, and prints ms, the speed-up over ref, the achieved
GB/s (bytes that must move at least: inputs read + outputs written, and for the backward the incoming gradient
read + the input gradient written) and its fraction of this card's measured device-to-device copy bandwidth.

    python bench/ops.py                              # everything, T and R at 256, batch 32
    python bench/ops.py --cfg t --ops filtered_lrelu --layers L3,L10

Needs a CUDA GPU; on a machine without one it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ops  # noqa: E402

# Synthesis layers at 256x256 (stylegan3-tables.txt): name, input size (before the conv), channels (out),
# up, down, up taps, down taps, radial down filter, filtered_lrelu padding [x0, x1, y0, y1], fp16, conv kernel.
LAYERS = {
    "t": [
        ("L0_36_512", 36, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 0, 3),
        ("L1_36_512", 36, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 0, 3),
        ("L2_36_512", 36, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 0, 3),
        ("L3_52_512", 36, 512, 4, 2, 24, 12, 0, [-6, -9, -6, -9], 1, 3),
        ("L4_52_512", 52, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L5_84_512", 52, 512, 4, 2, 24, 12, 0, [-6, -9, -6, -9], 1, 3),
        ("L6_84_512", 84, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L7_148_512", 84, 512, 4, 2, 24, 12, 0, [-6, -9, -6, -9], 1, 3),
        ("L8_148_512", 148, 512, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L9_148_362", 148, 362, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L10_276_256", 148, 256, 4, 2, 24, 12, 0, [-6, -9, -6, -9], 1, 3),
        ("L11_276_181", 276, 181, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L12_276_128", 276, 128, 2, 2, 12, 12, 0, [9, 8, 9, 8], 1, 3),
        ("L13_256_128", 276, 128, 2, 2, 12, 12, 0, [-11, -12, -11, -12], 1, 3),
        ("L14_256_3", 256, 3, 1, 1, 1, 1, 0, [0, 0, 0, 0], 1, 1),
    ],
    "r": [
        ("L0_36_1024", 36, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 0, 1),
        ("L1_36_1024", 36, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 0, 1),
        ("L2_36_1024", 36, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 0, 1),
        ("L3_52_1024", 36, 1024, 4, 2, 24, 12, 1, [-2, -5, -2, -5], 1, 1),
        ("L4_52_1024", 52, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 1, 1),
        ("L5_84_1024", 52, 1024, 4, 2, 24, 12, 1, [-2, -5, -2, -5], 1, 1),
        ("L6_84_1024", 84, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 1, 1),
        ("L7_148_1024", 84, 1024, 4, 2, 24, 12, 1, [-2, -5, -2, -5], 1, 1),
        ("L8_148_1024", 148, 1024, 2, 2, 12, 12, 1, [11, 10, 11, 10], 1, 1),
        ("L9_148_724", 148, 724, 2, 2, 12, 12, 1, [11, 10, 11, 10], 1, 1),
        ("L10_276_512", 148, 512, 4, 2, 24, 12, 1, [-2, -5, -2, -5], 1, 1),
        ("L11_276_362", 276, 362, 2, 2, 12, 12, 1, [11, 10, 11, 10], 1, 1),
        ("L12_276_256", 276, 256, 2, 2, 12, 12, 0, [11, 10, 11, 10], 1, 1),
        ("L13_256_256", 276, 256, 2, 2, 12, 12, 0, [-9, -10, -9, -10], 1, 1),
        ("L14_256_3", 256, 3, 1, 1, 1, 1, 0, [0, 0, 0, 0], 1, 1),
    ],
}
OPS = ("filtered_lrelu", "bias_act", "upfirdn2d")


def lowpass(taps: int, up_or_down: int, radial: bool, device) -> torch.Tensor | None:
    """A windowed-sinc low-pass of the layer's size (the values do not change the timing)."""
    if taps == 1:
        return None
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(n / (2 * up_or_down)) * np.kaiser(taps, 4.0)
    f = np.outer(h, h) if radial else h
    return torch.tensor(f / f.sum(), dtype=torch.float32, device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of ``fn()`` in ms (synchronised before and after each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in GB/s (bytes read + written)."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, 3, 10)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def layer_cases(row, batch: int, channels_div: int, device: torch.device, force_fp32: bool):
    """``{op: (callable(impl, x, b), x, b, out_bytes)}`` for one layer."""
    name, size, ch, up, down, up_taps, down_taps, radial, pad, fp16, k = row
    ch = max(1, ch // channels_div)
    dtype = torch.float16 if fp16 and not force_fp32 else torch.float32
    fu = lowpass(up_taps, up, False, device)
    fd = lowpass(down_taps, down, bool(radial), device)
    gain, slope = (math.sqrt(2), 0.2) if up_taps > 1 else (1.0, 1.0)
    x = torch.randn(batch, ch, size + k - 1, size + k - 1, device=device, dtype=dtype)
    b = torch.randn(ch, device=device, dtype=dtype)
    return dtype, {
        "filtered_lrelu": (lambda impl, x_, b_: ops.filtered_lrelu(
            x_, fu, fd, b_, up=up, down=down, padding=pad, gain=gain, slope=slope, clamp=256.0, impl=impl), x, b),
        "bias_act": (lambda impl, x_, b_: ops.bias_act(x_, b_, act="lrelu", clamp=256.0, impl=impl), x, b),
        "upfirdn2d": (lambda impl, x_, b_: ops.upfirdn2d(x_, fu, up=up, padding=pad, gain=up * up, impl=impl), x, None),
    }


def bench_one(fn, x, b, impl: str, device, warmup: int, iters: int):
    """(fwd ms, fwd+bwd ms, fwd bytes, fwd+bwd bytes) of ``fn(impl, x, b)``."""
    with torch.no_grad():
        y = fn(impl, x, b)
    fwd_bytes = x.numel() * x.element_size() + y.numel() * y.element_size()
    fwd = time_ms(lambda: fn(impl, x, b), device, warmup, iters)
    xg = x.detach().requires_grad_(True)
    bg = None if b is None else b.detach().requires_grad_(True)
    dy = torch.randn_like(y)

    def fwd_bwd():
        out = fn(impl, xg, bg)
        torch.autograd.backward(out, dy)

    both = time_ms(fwd_bwd, device, warmup, iters)
    # the backward must at least read dy and write dx
    both_bytes = fwd_bytes + dy.numel() * dy.element_size() + x.numel() * x.element_size()
    del y, dy
    return fwd, both, fwd_bytes, both_bytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="t,r", help="comma-separated configs to run: t, r (default: t,r)")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated ops to time (default: {','.join(OPS)})")
    p.add_argument("--layers", default="", help="comma-separated layer name prefixes, e.g. L3,L10 (default: all)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--channels-div", type=int, default=1, help="divide every layer's channels by this (default: 1)")
    p.add_argument("--fp32", action="store_true", help="run every layer in float32 (default: fp16 where the model uses it)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    p.add_argument("--iters", type=int, default=10, help="timed calls; the median is reported (default: 10)")
    p.add_argument("--device", default="cuda", help="torch device (default: cuda); 'cpu' only under TRITON_INTERPRET=1"
                                                    " as a smoke test of this script")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/ops.py needs a CUDA GPU (Triton kernels vs the reference at 256x256, batch 32); "
              "none is available here, nothing to measure.")
        return 0
    ops_sel = [o for o in args.ops.split(",") if o]
    for o in ops_sel:
        if o not in OPS:
            p.error(f"--ops: unknown op {o!r}; choose from {', '.join(OPS)}")
    cfgs = [c for c in args.cfg.split(",") if c]
    for c in cfgs:
        if c not in LAYERS:
            p.error(f"--cfg: unknown config {c!r}; choose from t, r")
    prefixes = [s for s in args.layers.split(",") if s]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    bw = copy_bandwidth(device, 1 << 30 if device.type == "cuda" else 1 << 22)
    print(f"device: {name}; torch {torch.__version__}; measured copy bandwidth {bw:.0f} GB/s; batch {args.batch}")
    header = (f"{'cfg':3} {'layer':12} {'op':15} {'dtype':8} {'pass':8} {'ref ms':>9} {'triton ms':>10} "
              f"{'speed-up':>8} {'GB/s':>7} {'of copy':>7}")
    print(header)
    print("-" * len(header))
    for cfg in cfgs:
        for row in LAYERS[cfg]:
            if prefixes and not any(row[0].startswith(pfx + "_") or row[0] == pfx for pfx in prefixes):
                continue
            dtype, cases = layer_cases(row, args.batch, args.channels_div, device, args.fp32)
            for op in ops_sel:
                fn, x, b = cases[op]
                if op == "upfirdn2d" and row[5] == 1:
                    continue  # ToRGB has no filters
                res = {}
                for impl in ("ref", "triton"):
                    try:
                        res[impl] = bench_one(fn, x, b, impl, device, args.warmup, args.iters)
                    except Exception as e:  # noqa: BLE001 -- a failing impl is reported in its row, not fatal
                        res[impl] = e
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                for i, pass_name in enumerate(("fwd", "fwd+bwd")):
                    ref, tri = res["ref"], res["triton"]
                    ref_ms = f"{ref[i]:9.3f}" if not isinstance(ref, Exception) else f"{'error':>9}"
                    if isinstance(tri, Exception):
                        print(f"{cfg:3} {row[0]:12} {op:15} {str(dtype)[6:]:8} {pass_name:8} {ref_ms} "
                              f"{'error':>10}  {type(tri).__name__}: {str(tri)[:80]}")
                        continue
                    t_ms, nbytes = tri[i], tri[2 + i]
                    gbs = nbytes / (t_ms * 1e-3) / 1e9
                    speed = f"{ref[i] / t_ms:7.2f}x" if not isinstance(ref, Exception) else f"{'-':>8}"
                    print(f"{cfg:3} {row[0]:12} {op:15} {str(dtype)[6:]:8} {pass_name:8} {ref_ms} {t_ms:10.3f} "
                          f"{speed} {gbs:7.0f} {gbs / bw:7.2f}")
                del fn, x, b
            del cases
    return 0


if __name__ == "__main__":
    sys.exit(main())
