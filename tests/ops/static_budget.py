"""Compile every Triton kernel variant StyleGAN3-T/-R use for an H100 (sm_90) without a GPU and check the budget.

Run as ``python -m tests.ops.static_budget [SHARD/SHARDS]`` in a process without ``TRITON_INTERPRET`` (tests/ops/
test_static_budget.py runs shards 0/2 and 1/2 side by side on one Triton cache); prints one JSON object. The variants are the launches the ops' own host code makes
(ops/_triton/static_compile.py) for:

- filtered_lrelu: every synthesis layer of T and R at 256², 512² and 1024², forward with codes, backward and the
  second-order launch, in the layer's dtype (fp16 where the model uses it) and all in fp32 (``--fp32``);
- upfirdn2d: the discriminator's blur (4x4, pad 2) and skip downsample at every block resolution, ADA's 12-tap
  up/down passes, each forward, backward and second order, fp16 and fp32;
- bias_act: D's lrelu with bias and clamp, all three orders, fp16 and fp32.

Budget (issue 17): no register spills; at least 2 resident blocks per SM or 16 warps; filtered_lrelu's dots on
tensor cores (mma/wgmma in the PTX) for fp16/fp32; no 64-bit division or remainder in upfirdn2d and bias_act.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESOLUTIONS = (256, 512, 1024)


def _bench_ops():
    spec = importlib.util.spec_from_file_location("_bench_ops", ROOT / "bench" / "ops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _calls(bench, shard: int = 0, shards: int = 1):
    """The launches to compile; with ``shards`` > 1, the part ``shard`` compiles (config R apart from T and the
    other ops: they share few variants, so two processes on a shared cache compile little twice)."""
    import torch

    cfgs = ("t", "r") if shards == 1 else (("t",), ("r",))[shard]
    for res in RESOLUTIONS:
        for cfg in cfgs:
            for dtype in (None, torch.float32):
                for name, dt, fn in bench.flrelu_calls(cfg, res, 32, second_order=True, dtype=dtype):
                    yield f"{cfg}{res} {name} {str(dt)[6:]}", fn
        r = res if shards == 1 or shard == 0 else 0
        while r >= 8:
            for dtype in (torch.float16, torch.float32):
                for name, dt, fn in bench.other_calls(r, 32, dtype=dtype, second_order=True):
                    if r == res or name.startswith("D-"):
                        yield f"{name} {str(dt)[6:]}", fn
            r //= 2


def violations(rec, res) -> list[str]:
    """What a launch's compiled kernel breaks of the budget (empty = within it)."""
    bad = []
    if res.spill_bytes:
        bad.append(f"{res.spill_bytes} bytes of spills")
    if res.blocks_per_sm < 2 and res.warps_per_sm < 16:
        bad.append(f"{res.blocks_per_sm} block(s) of {res.num_warps} warps per SM ({res.regs} registers, "
                   f"{res.shared} B shared)")
    if rec.name.startswith("_flrelu") and rec.params["DOT"] != 0 and res.mma == 0:
        bad.append("no tensor-core instructions")
    if rec.name in ("_upfirdn2d_kernel", "_bias_act_kernel") and res.div64:
        bad.append(f"{res.div64} 64-bit div/rem instructions")
    return bad


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    shard, shards = (int(v) for v in argv[0].split("/")) if argv else (0, 1)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("static_budget compiles for sm_90: run it without TRITON_INTERPRET")
    import ops._triton.static_compile as sc

    t0 = time.time()
    bench = _bench_ops()
    seen: dict = {}
    launches = 0
    for label, fn in _calls(bench, shard, shards):
        with sc.compile_only() as recs:
            fn()
        for rec in recs:
            launches += 1
            key = rec.compiled.hash
            if key in seen:
                continue
            res = sc.resources(rec.compiled)
            p = rec.params
            variant = {k: p[k] for k in p if k.isupper() and k not in ("FLOOR_BIAS",)}
            seen[key] = dict(kernel=rec.name, first_use=label, regs=res.regs, spills=res.spill_bytes,
                             stack=res.stack, shared=res.shared, warps=res.num_warps,
                             blocks_per_sm=res.blocks_per_sm, mma=res.mma, div64=res.div64,
                             variant={k: (v if isinstance(v, (int, float, bool)) else str(v))
                                      for k, v in variant.items()},
                             violations=violations(rec, res))
    out = dict(triton=__import__("triton").__version__, launches=launches, variants=len(seen),
               seconds=round(time.time() - t0, 1), kernels=list(seen.values()))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
