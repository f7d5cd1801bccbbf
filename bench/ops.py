"""Benchmark: ops reference path vs Triton kernels, per StyleGAN3-T and -R synthesis layer (docs/algorithm.md "Ops").

For every layer of StyleGAN3-T/-R at 256x256 (batch 32 by default) it times filtered_lrelu, its bias_act-shaped
input step and the upfirdn2d up stage, forward and forward+backward, in the layer's dtype (fp16 where the model
uses it), with impl='ref' and impl='triton' in the same process, and prints ms, the speed-up over ref, the achieved
GB/s (bytes that must move at least: inputs read + outputs written, and for the backward the incoming gradient
read + the input gradient written) and its fraction of this card's measured device-to-device copy bandwidth.

    python bench/ops.py                              # everything, T and R at 256, batch 32
    python bench/ops.py --cfg t --ops filtered_lrelu --layers L3,L10

Needs a CUDA GPU; on a machine without one it says so and exits 0.

    python bench/ops.py --model [--cfg t,r] [--res 256] [--batch 32]

needs no GPU: it compiles every kernel launch of each layer's filtered_lrelu (forward with codes, backward) for an
H100 (sm_90, ops/_triton/static_compile.py) and prints, from the kernels' own tile plans, the multiply-adds they
launch per unit (CUDA cores / tensor cores), the bytes they move, registers / spills / resident blocks per SM, and
the predicted H100 time max(bytes / 3.3 TB/s, multiply-adds / the unit's peak) beside the memory floor
(input + output + codes once). Also the discriminator's and the augment pipe's upfirdn2d / bias_act calls.
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


def _model_layers(cfg: str, res: int):
    """(name, spec, fu, fd) of every synthesis layer of the preset at ``res`` (models/ builds them)."""
    from models.config import build_config
    from models.filters import design_lowpass_filter, filter_tensor
    from models.generator import synthesis_schedule

    g = build_config("stylegan3-" + cfg, res).G
    for spec in synthesis_schedule(g).layers:
        fu = filter_tensor(design_lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2,
                                                 spec.tmp_sampling_rate))
        fd = filter_tensor(design_lowpass_filter(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                                 spec.tmp_sampling_rate, radial=spec.radial_down))
        yield spec.name, spec, fu, fd


def flrelu_calls(cfg: str, res: int, batch: int, second_order: bool = False, dtype=None):
    """Per layer: (name, dtype, fn) where fn() runs the layer's filtered_lrelu on meta tensors (forward with codes,
    backward, and optionally the second-order launch) through the Triton host code. ``dtype``: None = the layer's
    own (fp16 where the model uses it), or force one."""
    from ops._triton.filtered_lrelu import filtered_lrelu_triton

    forced = dtype
    for name, spec, fu, fd in _model_layers(cfg, res):
        dtype = forced or (torch.float16 if spec.use_fp16 else torch.float32)
        size = spec.in_size + spec.kernel_size - 1
        gain, slope = (1.0, 1.0) if spec.is_torgb else (math.sqrt(2), 0.2)

        def fn(spec=spec, fu=fu, fd=fd, dtype=dtype, size=size, gain=gain, slope=slope, phases=None):
            x = torch.empty(batch, spec.out_channels, size, size, device="meta", dtype=dtype, requires_grad=True)
            b = torch.empty(spec.out_channels, device="meta", dtype=dtype, requires_grad=True)
            mark = phases if phases is not None else (lambda _: None)
            mark("fwd")
            y = filtered_lrelu_triton(x, fu, fd, b, spec.up, spec.down, list(spec.padding), gain, slope, 256.0,
                                      False)
            mark("bwd")
            dy = torch.empty_like(y, requires_grad=second_order)
            dx, = torch.autograd.grad(y, x, dy, create_graph=second_order)
            if second_order:
                mark("2nd")
                torch.autograd.grad(dx, dy, torch.empty_like(dx))

        yield name, dtype, fn


def other_calls(res: int, batch: int, dtype=torch.float16, second_order: bool = False):
    """The discriminator's and ADA's upfirdn2d calls and a bias_act, on meta tensors: (name, dtype, fn).
    ``dtype``: D's dtype (fp16 in its high-resolution blocks, fp32 elsewhere); ADA runs in fp32."""
    from ops._triton.bias_act import bias_act_triton
    from ops._triton.upfirdn2d import upfirdn2d_triton
    from ops.upfirdn2d import setup_filter

    blur = setup_filter([1, 3, 3, 1])
    sym6 = torch.tensor([0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
                         0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
                         -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036,
                         -0.007800708325034148])
    ch = min(32768 // res, 512)

    def run(shape, dtype, f, up, down, pad, flip, gain):
        def fn(phases=None):
            mark = phases if phases is not None else (lambda _: None)
            x = torch.empty(*shape, device="meta", dtype=dtype, requires_grad=True)
            mark("fwd")
            y = upfirdn2d_triton(x, f, up, down, pad, flip, gain)
            mark("bwd")
            dy = torch.empty_like(y, requires_grad=second_order)
            dx, = torch.autograd.grad(y, x, dy, create_graph=second_order)
            if second_order:
                mark("2nd")
                torch.autograd.grad(dx, dy, torch.empty_like(dx))
        return fn

    def act(shape, dtype):
        def fn(phases=None):
            mark = phases if phases is not None else (lambda _: None)
            x = torch.empty(*shape, device="meta", dtype=dtype, requires_grad=True)
            b = torch.empty(shape[1], device="meta", dtype=dtype, requires_grad=True)
            mark("fwd")
            y = bias_act_triton(x, b, 1, "lrelu", 0.2, math.sqrt(2), 256.0)
            mark("bwd")
            dx, = torch.autograd.grad(y, x, torch.empty_like(y), create_graph=second_order)
            if second_order:  # R1: D's gradient differentiated again (x and b)
                mark("2nd")
                torch.autograd.grad(dx, [x, b], torch.empty_like(dx))
        return fn

    yield f"D-blur {res}", dtype, run((batch, ch, res + 2, res + 2), dtype, blur, 1, 1, [2, 2, 2, 2], False, 1)
    yield f"D-skip {res}", dtype, run((batch, ch, res, res), dtype, blur, 1, 2, [1, 1, 1, 1], False, 1)
    yield f"D-act {res}", dtype, act((batch, ch, res, res), dtype)
    yield f"ADA-up {res}", torch.float32, run((batch, 3, res + 26, res + 26), torch.float32, sym6, 2, 1,
                                              [6, 5, 6, 5], False, 4)
    yield f"ADA-down {res}", torch.float32, run((batch, 3, 2 * res + 12, 2 * res + 12), torch.float32, sym6, 1, 2,
                                                [-1, -2, -1, -2], True, 1)


def model(cfgs, res: int, batch: int, show_others: bool = True) -> int:
    """Print the launch model (see the module docstring) and the worst predicted/floor ratio per config and pass."""
    import ops._triton.bias_act as kb
    import ops._triton.filtered_lrelu as kf
    import ops._triton.static_compile as sc
    import ops._triton.upfirdn2d as ku

    costs = {"_flrelu_kernel": kf.launch_cost, "_flrelu_stream_kernel": kf.launch_cost,
             "_upfirdn2d_kernel": ku.launch_cost, "_bias_act_kernel": kb.launch_cost}
    floors = {"_flrelu_kernel": kf.floor_bytes, "_flrelu_stream_kernel": kf.floor_bytes,
              "_upfirdn2d_kernel": ku.floor_bytes,
              "_bias_act_kernel": kb.floor_bytes}
    print(f"H100 model (sm_90 compile, no GPU): {sc.H100_BYTES_PER_S / 1e12:.1f} TB/s; multiply-adds/s: "
          + ", ".join(f"{k} {v / 1e12:.1f}T" for k, v in sc.H100_MACS_PER_S.items()) + f"; batch {batch}, {res}x{res}")
    header = (f"{'cfg':3} {'layer':13} {'dtype':7} {'pass':4} {'launch':>6} {'GMAC cuda':>9} {'GMAC tc':>8} "
              f"{'MB moved':>8} {'MB floor':>8} {'pred ms':>7} {'floor ms':>8} {'ratio':>5} {'regs':>4} "
              f"{'spill':>5} {'stack':>5} {'blk/SM':>6} {'warps':>5}")
    print(header)
    print("-" * len(header))
    worst = {}
    groups = [(c, flrelu_calls(c, res, batch)) for c in cfgs]
    if show_others:
        groups.append(("-", other_calls(res, batch)))
    for cfg, calls in groups:
        for name, dtype, fn in calls:
            marks = []
            with sc.compile_only() as launches:
                fn(phases=lambda ph: marks.append((ph, len(launches))))
            bounds = [m[1] for m in marks] + [len(launches)]
            for (ph, lo), hi in zip(marks, bounds[1:]):
                recs = launches[lo:hi]
                if not recs:
                    continue
                macs_c = macs_t = 0.0
                t_mac = 0.0
                moved = floor = 0.0
                for rec in recs:
                    c = costs[rec.name](rec.params, rec.programs)
                    for unit, n in c["macs"].items():
                        t_mac += n / sc.H100_MACS_PER_S[unit]
                        if unit.startswith("tc_"):
                            macs_t += n
                        else:
                            macs_c += n
                    moved += c["dram_bytes"]
                    floor += floors[rec.name](rec.params)
                pred = max(moved / sc.H100_BYTES_PER_S, t_mac)
                fl = floor / sc.H100_BYTES_PER_S
                res_ = [sc.resources(r.compiled) for r in recs]
                regs = max(r.regs for r in res_)
                spill = max(r.spill_bytes for r in res_)
                stack = max(r.stack for r in res_)
                blk = min(r.blocks_per_sm for r in res_)
                warps = min(r.warps_per_sm for r in res_)
                ratio = pred / fl
                worst[(cfg, ph)] = max(worst.get((cfg, ph), 0.0), ratio)
                print(f"{cfg:3} {name:13} {str(dtype)[6:]:7} {ph:4} {len(recs):6d} {macs_c / 1e9:9.2f} "
                      f"{macs_t / 1e9:8.2f} {moved / 1e6:8.1f} {floor / 1e6:8.1f} {pred * 1e3:7.3f} "
                      f"{fl * 1e3:8.3f} {ratio:5.2f} {regs:4d} {spill:5d} {stack:5d} {blk:6d} {warps:5d}")
    print("worst predicted/floor: " + ", ".join(f"{c} {ph} {v:.2f}" for (c, ph), v in worst.items()))
    return 0


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
    p.add_argument("--model", action="store_true", help="no GPU: compile for sm_90 and print the launch model")
    p.add_argument("--res", type=int, default=256, help="--model: output resolution (default: 256)")
    p.add_argument("--no-others", action="store_true", help="--model: only the synthesis layers' filtered_lrelu")
    args = p.parse_args(argv)

    if args.model:
        os.environ.pop("TRITON_INTERPRET", None)
        return model([c for c in args.cfg.split(",") if c], args.res, args.batch, not args.no_others)

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
