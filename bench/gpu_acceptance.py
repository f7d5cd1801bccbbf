"""GPU acceptance: everything a short loan of one GPU should tell us, in one command (issue 16).

    python bench/gpu_acceptance.py                 # on the GPU: < 8 min including Triton compilation
    python bench/gpu_acceptance.py --dry           # CPU, Triton interpreter, tiny sizes: the CI run of this script

Writes OUT/gpu_acceptance.json and OUT/gpu_acceptance.md (OUT = --out, default outputs/gpu_acceptance), rewritten
after every section, so a run killed from outside still leaves what it measured:

1. G on the device vs G on the CPU (reference ops, float32) for the same seeds, T and R: max |difference| with the
   fp16 layers forced to fp32 (a wrong kernel shows here) and as the model marks them (fp16);
2. every test marked `gpu` (pytest -m gpu in a subprocess), pass/fail with the error;
3. one full training step (Gmain + Dmain + Dreg/16, ADA on at p = 0.2) for T and R at 256x256, batch 32, fp16
   layers as the model marks them: s/kimg and peak memory beside the official published figures;
4. per StyleGAN3-T and -R synthesis layer at 256x256, batch 32: filtered_lrelu, bias_act and upfirdn2d, Triton vs
   the reference, forward and forward+backward: ms, GB/s and the fraction of the card's measured copy bandwidth,
   plus max |Triton - reference| of the forward (bench/ops.py's cases and timers).

It needs only torch, triton, numpy, scipy and pillow (no Ray, MLflow, webdataset, boto3; safetensors is stubbed
when absent: nothing here reads or writes network files). It keeps to --budget-s (default 450 s) from its own
start: each section and each item checks the time left first, and what it did not reach is listed in both files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Official published training speed, StyleGAN3-T at 256x256 on 1 GPU (s/kimg), as quoted in issue 16.
PUBLISHED = {"stylegan3-t": {"A100": 49.81, "V100": 89.15}}
ADA_P = 0.2  # ADA probability during the timed steps (p starts at 0 in a real run and grows; 0 would skip the pipe)
RESULTS_ENV = "GPU_ACCEPTANCE_RESULTS"  # the pytest plugin below appends one JSON line per test to this file


# --------------------------------------------------------------------------------------------------------------------
# pytest plugin (loaded in the test subprocess with `-p gpu_acceptance`): one JSON line per test outcome.

def pytest_runtest_logreport(report):
    path = os.environ.get(RESULTS_ENV)
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return
    error = ""
    if report.outcome == "failed":
        error = getattr(report, "longreprtext", "") or str(report.longrepr)
        error = error.strip().splitlines()[-1][:300] if error.strip() else "failed"
    elif report.outcome == "skipped":
        error = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    with open(path, "a") as f:
        f.write(json.dumps({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                            "seconds": round(report.duration, 2), "error": error}) + "\n")


def pytest_configure(config):
    _stub_missing_safetensors()  # the test files import models/ as this script does


def pytest_collectreport(report):
    path = os.environ.get(RESULTS_ENV)
    if path and report.failed:  # a test file that does not even import (a missing package, a syntax error)
        error = str(report.longrepr).strip().splitlines()
        with open(path, "a") as f:
            f.write(json.dumps({"test": report.nodeid, "when": "collect", "outcome": "failed", "seconds": 0,
                                "error": (error[-1] if error else "collection failed")[:300]}) + "\n")


# --------------------------------------------------------------------------------------------------------------------

class Budget:
    """Seconds left of the run's budget, counted from the script's start."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def used(self) -> float:
        return time.monotonic() - self.start


class Report:
    """The results so far; written as JSON + markdown after every section."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data = out, {"meta": meta, "sections": {}, "not_reached": []}
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, value) -> None:
        self.data["sections"][name] = value
        self.write()

    def skip(self, what: str) -> None:
        self.data["not_reached"].append(what)
        print(f"  not reached (budget): {what}", flush=True)

    def write(self) -> None:
        (self.out / "gpu_acceptance.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu_acceptance.md").write_text(markdown(self.data))


def _stub_missing_safetensors() -> list[str]:
    """models/ imports safetensors at module level for network files; this script reads and writes none, so a
    machine without it gets a stub that refuses to be used."""
    try:
        import safetensors.torch  # noqa: F401
        return []
    except ImportError:
        pass

    def refuse(*_a, **_k):
        raise RuntimeError("safetensors is not installed (stubbed by bench/gpu_acceptance.py)")

    pkg, sub = types.ModuleType("safetensors"), types.ModuleType("safetensors.torch")
    sub.load = sub.save = sub.load_file = sub.save_file = refuse
    pkg.torch = sub
    sys.modules.update({"safetensors": pkg, "safetensors.torch": sub})
    return ["safetensors"]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def _load_bench_ops():
    spec = importlib.util.spec_from_file_location("bench_ops", ROOT / "bench" / "ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------------------------
# 1. G on the device vs G on the CPU

def g_equivalence(a, device, report: Report, budget: Budget) -> list[dict]:
    import torch

    import models

    rows = []
    seeds = list(range(a.g_seeds))
    for cfg in ("stylegan3-t", "stylegan3-r"):
        if budget.left() < a.reserve_s + 10:
            report.skip(f"G device vs CPU, {cfg}")
            continue
        t0 = time.monotonic()
        try:
            torch.manual_seed(0)
            G, _ = models.build(cfg, a.res, **a.model_overrides)
            G = G.eval().requires_grad_(False)
            z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
            c = torch.zeros([len(seeds), G.c_dim])
            with torch.no_grad():
                ref = _with_impl("cpu", lambda: G(z, c))  # CPU, float32: the CPU path (equal to the definitions, "ref", within 3e-7 and several times faster)
                Gd = G.to(device)
                got32 = _with_impl(a.device_impl, lambda: Gd(z.to(device), c.to(device), force_fp32=True)).cpu()
                got16 = _with_impl(a.device_impl, lambda: Gd(z.to(device), c.to(device))).cpu()
            scale = float(ref.abs().max())
            d32, d16 = float((got32 - ref).abs().max()), float((got16 - ref).abs().max())
            rows.append({"cfg": cfg, "res": a.res, "seeds": len(seeds), "max_abs_output": scale,
                         "max_abs_diff_fp32": d32, "max_abs_diff_fp16": d16,
                         # fp32 everywhere: only summation order differs (TF32 is off); fp16 layers: ~1e-3 relative
                         "ok": d32 <= 1e-3 * max(scale, 1.0) and d16 <= 5e-2 * max(scale, 1.0),
                         "seconds": round(time.monotonic() - t0, 1)})
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            rows.append({"cfg": cfg, "error": _error(e), "trace": traceback.format_exc()[-2000:]})
        print(f"  G {cfg}: {rows[-1]}", flush=True)
        report.section("g_equivalence", rows)
    return rows


def _with_impl(impl: str, fn):
    """Run fn with STYLEGAN3_OPS_IMPL=impl ('auto' = the dispatcher's own choice: Triton on CUDA)."""
    before = os.environ.get("STYLEGAN3_OPS_IMPL")
    os.environ["STYLEGAN3_OPS_IMPL"] = impl
    try:
        return fn()
    finally:
        if before is None:
            os.environ.pop("STYLEGAN3_OPS_IMPL", None)
        else:
            os.environ["STYLEGAN3_OPS_IMPL"] = before


# --------------------------------------------------------------------------------------------------------------------
# 2. The tests marked gpu

def gpu_test_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text(errors="replace")
        if "pytest.mark.gpu" in text:
            files.append(str(path.relative_to(ROOT)))
    return files


def gpu_tests(a, report: Report, budget: Budget) -> dict:
    timeout = min(a.tests_s, budget.left() - a.reserve_s - a.after_tests_s)
    files = gpu_test_files()
    if timeout < 20:
        report.skip(f"tests marked gpu ({len(files)} files)")
        return {}
    results = report.out / "gpu_tests.jsonl"
    results.unlink(missing_ok=True)
    env = {**os.environ, RESULTS_ENV: str(results),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "gpu_acceptance", "-p", "no:cacheprovider", "-q",
           "--continue-on-collection-errors", *files]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                               else (e.stdout or ""))[-3000:]
        report.skip(f"tests marked gpu after the first {timeout:.0f} s (those not listed did not run)")
    tests = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    summary = {"files": files, "exit": rc, "seconds": round(time.monotonic() - t0, 1), "tests": tests,
               "counts": {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "skipped")},
               "output_tail": tail}
    print(f"  gpu tests: {summary['counts']} (exit {rc}, {summary['seconds']} s)", flush=True)
    report.section("gpu_tests", summary)
    return summary


# --------------------------------------------------------------------------------------------------------------------
# 3. One full training step

def train_steps(a, device, report: Report, budget: Budget) -> list[dict]:
    import torch

    from pipeline.training.config import TrainConfig
    from pipeline.training.loop import build_networks
    from pipeline.training.trainer import Trainer

    rows = []
    for cfg_name in ("stylegan3-t", "stylegan3-r"):
        if budget.left() < a.reserve_s + a.min_step_s:
            report.skip(f"training step, {cfg_name}")
            continue
        t0 = time.monotonic()
        try:
            cfg = TrainConfig().replace(model={"preset": cfg_name, **a.train_model}, schedule={"batch": a.train_batch},
                                        aug={"mode": "ada"}, run={"workers": 1})
            cfg = cfg.resolved(resolution=a.res, img_channels=3, c_dim=0)
            G, D = build_networks(cfg)
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = False  # as the training loop on a GPU worker
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cudnn.benchmark = True
                torch.cuda.reset_peak_memory_stats(device)
            t = Trainer(cfg, G, D, device)
            t.ada.load_state_dict({**t.ada.state_dict(), "p": ADA_P})
            img = torch.randint(0, 256, [a.train_batch, 3, a.res, a.res], dtype=torch.uint8)
            c = torch.zeros([a.train_batch, 0])
            k = cfg.optim.d_reg_interval

            def timed() -> float:
                _sync(device)
                s = time.perf_counter()
                t.step(img, c)
                _sync(device)
                return time.perf_counter() - s

            warm = timed()  # step 0 runs Dreg; includes Triton compilation and cuDNN autotuning
            noreg = [timed() for _ in range(a.steps)]  # batch_idx 1.. : no Dreg
            t.batch_idx = k * math.ceil(t.batch_idx / k)  # the next step runs Dreg
            reg = [timed() for _ in range(max(1, a.steps // 2))]
            t_noreg, t_reg = sorted(noreg)[len(noreg) // 2], sorted(reg)[len(reg) // 2]
            step = t_noreg + (t_reg - t_noreg) / k  # Dreg amortised over its interval
            row = {"cfg": cfg_name, "res": a.res, "batch": a.train_batch, "ada_p": ADA_P, "warmup_s": round(warm, 2),
                   "step_s": round(step, 4), "step_dreg_s": round(t_reg, 4), "step_no_dreg_s": round(t_noreg, 4),
                   "s_per_kimg": round(step / a.train_batch * 1000, 2),
                   "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                   if device.type == "cuda" else None,
                   "published_s_per_kimg": PUBLISHED.get(cfg_name, {}),
                   "finite": all(math.isfinite(float(p.detach().float().abs().sum())) for p in G.parameters()),
                   "seconds": round(time.monotonic() - t0, 1)}
            del t, G, D
        except Exception as e:  # noqa: BLE001
            row = {"cfg": cfg_name, "error": _error(e), "trace": traceback.format_exc()[-2000:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(f"  train step {cfg_name}: {row}", flush=True)
        report.section("train_step", rows)
    return rows


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------------------------
# 4. The three ops per layer

def ops_table(a, device, report: Report, budget: Budget) -> dict:
    import torch

    bo = _load_bench_ops()
    bw = bo.copy_bandwidth(device, 1 << 30 if device.type == "cuda" else 1 << 20)
    rows: list[dict] = []
    out = {"copy_bandwidth_gb_s": round(bw, 1), "batch": a.batch, "rows": rows}
    for cfg in ("t", "r"):
        for row in bo.LAYERS[cfg]:
            if a.layers and not any(row[0].startswith(p + "_") for p in a.layers):
                continue
            row = tuple(row)
            if a.dry:  # tiny spatial size, same filters/padding/dtype
                row = (row[0], min(row[1], a.dry_size)) + row[2:]
            dtype, cases = bo.layer_cases(row, a.batch, a.channels_div, device, False)
            for op in bo.OPS:
                if op == "upfirdn2d" and row[5] == 1:
                    continue  # ToRGB has no filters
                if budget.left() < a.reserve_s:
                    report.skip(f"ops {cfg} {row[0]} {op}")
                    continue
                fn, x, b = cases[op]
                entry = {"cfg": cfg, "layer": row[0], "op": op, "dtype": str(dtype).replace("torch.", "")}
                # The baseline: the plain definitions on the GPU; on CPU (--dry) the CPU path, which equals them
                # within 3e-7 (the definitions' float16 depthwise convolutions take minutes on a CPU).
                base = "ref" if device.type == "cuda" else "cpu"
                try:
                    with torch.no_grad():
                        y_ref = fn(base, x, b).float()
                        y_tri = fn("triton", x, b).float()
                    entry["max_abs_diff"] = float((y_tri - y_ref).abs().max())
                    entry["max_abs_ref"] = float(y_ref.abs().max())
                    del y_ref, y_tri
                except Exception as e:  # noqa: BLE001
                    entry["diff_error"] = _error(e)
                for key, impl in (("ref", base), ("triton", "triton")):
                    try:
                        fwd, both, fwd_b, both_b = bo.bench_one(fn, x, b, impl, device, a.warmup, a.iters)
                        entry[key] = {"fwd_ms": fwd, "fwd_bwd_ms": both}
                        if impl == "triton":
                            for name, ms, nbytes in (("fwd", fwd, fwd_b), ("fwd_bwd", both, both_b)):
                                gbs = nbytes / (ms * 1e-3) / 1e9
                                entry[f"{name}_gb_s"] = gbs
                                entry[f"{name}_of_copy"] = gbs / bw
                    except Exception as e:  # noqa: BLE001
                        entry[key] = {"error": _error(e)}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(entry)
            del cases
        report.section("ops", out)
    print(f"  ops: {len(rows)} rows", flush=True)
    return out


# --------------------------------------------------------------------------------------------------------------------
# The markdown table

def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else (fmt.format(v) if isinstance(v, (int, float)) else str(v))


def markdown(d: dict) -> str:
    m, s = d["meta"], d["sections"]
    out = [f"# GPU acceptance ({'dry run: CPU, Triton interpreter, tiny sizes' if m.get('dry') else m.get('device')})",
           "", f"{m.get('device')}; torch {m.get('torch')}, triton {m.get('triton')}, Python {m.get('python')}; "
           f"budget {m.get('budget_s')} s, used {_f(m.get('used_s'), '{:.0f}')} s"
           + (f"; stubbed: {', '.join(m['stubbed'])}" if m.get("stubbed") else ""), ""]
    if d["not_reached"]:
        out += ["**Not reached within the budget:** " + "; ".join(d["not_reached"]), ""]
    if "g_equivalence" in s:
        out += ["## G on the device vs the CPU reference (same seeds)", "",
                "| cfg | res | seeds | max abs output | max abs diff, fp32 | max abs diff, fp16 layers | ok |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in s["g_equivalence"]:
            out.append(f"| {r['cfg']} | {r.get('res', '-')} | {r.get('seeds', '-')} | {_f(r.get('max_abs_output'))} | "
                       f"{_f(r.get('max_abs_diff_fp32'), '{:.2e}')} | {_f(r.get('max_abs_diff_fp16'), '{:.2e}')} | "
                       f"{r.get('ok', r.get('error'))} |")
        out.append("")
    if "gpu_tests" in s:
        g = s["gpu_tests"]
        out += ["## Tests marked gpu", "", f"{g['counts']}, exit {g['exit']}, {g['seconds']} s", "",
                "| test | outcome | s | error |", "| --- | --- | --- | --- |"]
        out += [f"| {t['test']} | {t['outcome']} | {t['seconds']} | {t['error'].replace('|', '/')[:160]} |"
                for t in g["tests"]]
        out.append("")
    if "train_step" in s:
        out += ["## One training step (Gmain + Dmain + Dreg/16, ADA on)", "",
                "| cfg | res | batch | s/kimg | step s | step+Dreg s | peak GB | first step s | published s/kimg |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in s["train_step"]:
            if "error" in r:
                out.append(f"| {r['cfg']} | error: {r['error']} | | | | | | | |")
                continue
            pub = ", ".join(f"{k} {v}" for k, v in r["published_s_per_kimg"].items()) or "-"
            out.append(f"| {r['cfg']} | {r['res']} | {r['batch']} | {r['s_per_kimg']:.2f} | {r['step_s']:.3f} | "
                       f"{r['step_dreg_s']:.3f} | {_f(r['peak_mem_gb'], '{:.2f}')} | {r['warmup_s']:.1f} | {pub} |")
        out.append("")
    if "ops" in s:
        o = s["ops"]
        out += [f"## Ops per layer: Triton vs reference (batch {o['batch']}; copy bandwidth "
                f"{o['copy_bandwidth_gb_s']:.0f} GB/s)", "",
                "| cfg | layer | op | dtype | ref fwd ms | triton fwd ms | fwd GB/s | of copy | ref fwd+bwd ms | "
                "triton fwd+bwd ms | fwd+bwd GB/s | of copy | max abs diff |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in o["rows"]:
            ref, tri = r.get("ref", {}), r.get("triton", {})
            diff = _f(r.get("max_abs_diff"), "{:.1e}") if "diff_error" not in r else r["diff_error"][:60]
            out.append(f"| {r['cfg']} | {r['layer']} | {r['op']} | {r['dtype']} | "
                       f"{_f(ref.get('fwd_ms', ref.get('error')))} | {_f(tri.get('fwd_ms', tri.get('error')))} | "
                       f"{_f(r.get('fwd_gb_s'), '{:.0f}')} | {_f(r.get('fwd_of_copy'), '{:.2f}')} | "
                       f"{_f(ref.get('fwd_bwd_ms'))} | {_f(tri.get('fwd_bwd_ms'))} | "
                       f"{_f(r.get('fwd_bwd_gb_s'), '{:.0f}')} | {_f(r.get('fwd_bwd_of_copy'), '{:.2f}')} | {diff} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dry", action="store_true", help="CPU under TRITON_INTERPRET=1 at tiny sizes (CI)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "gpu_acceptance"), help="output directory")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting work after this many seconds "
                   "(default 450 on a GPU, 120 with --dry)")
    p.add_argument("--sections", default="g,tests,train,ops", help="comma-separated subset of g,tests,train,ops")
    p.add_argument("--layers", default="", help="ops: comma-separated layer prefixes, e.g. L0,L3 (default: all; "
                   "--dry: L3,L14)")
    a = p.parse_args(argv)
    a.sections = set(a.sections.split(","))
    a.layers = [x for x in a.layers.split(",") if x]
    if a.dry:
        a.budget_s = a.budget_s or 120
        a.res, a.batch, a.channels_div, a.dry_size, a.warmup, a.iters, a.steps = 16, 2, 128, 12, 0, 1, 1
        a.train_batch = 4  # the smallest batch D's minibatch-std group (4) allows
        a.g_seeds, a.tests_s, a.after_tests_s, a.reserve_s, a.min_step_s = 1, 60, 20, 5, 5
        # Two synthesis layers on a small canvas: the interpreter runs ~0.1 ms per op per program (docs/platform.md "Triton interpreter").
        a.model_overrides = {"channel_base": 256, "channel_max": 8, "num_layers": 2, "num_critical": 1,
                             "margin_size": 2}
        a.train_model = {"cbase": 256, "cmax": 8}
        a.layers = a.layers or ["L3", "L14"]  # an up-4 fp16 layer and ToRGB
        a.device_impl = "triton"  # CPU tensors through the interpreted kernels: compared with the reference
    else:
        a.budget_s = a.budget_s or 450
        a.res, a.batch, a.channels_div, a.dry_size, a.warmup, a.iters, a.steps = 256, 32, 1, None, 2, 5, 2
        a.train_batch = 32
        a.g_seeds, a.tests_s, a.after_tests_s, a.reserve_s, a.min_step_s = 2, 150, 180, 15, 60
        a.model_overrides, a.train_model = {}, {}
        a.device_impl = "auto"  # Triton on CUDA tensors
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    budget = Budget(a.budget_s)
    if a.dry:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported (docs/platform.md "Triton interpreter")
    sys.path.insert(0, str(ROOT))
    stubbed = _stub_missing_safetensors()
    import torch
    import triton

    if a.dry:
        device, name = torch.device("cpu"), "CPU (Triton interpreter)"
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    elif not torch.cuda.is_available():
        print("bench/gpu_acceptance.py needs a CUDA GPU; none is visible (run with --dry on a CPU)", file=sys.stderr)
        return 2
    else:
        device, name = torch.device("cuda", 0), torch.cuda.get_device_name(0)
        torch.set_num_threads(os.cpu_count() or 1)  # the CPU side of the G comparison: T/R at 256 in float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    meta = {"device": name, "dry": a.dry, "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "budget_s": a.budget_s, "stubbed": stubbed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report = Report(Path(a.out), meta)
    print(f"gpu acceptance on {name}: torch {torch.__version__}, triton {triton.__version__}, budget {a.budget_s:g} s",
          flush=True)
    steps = [("g", "G device vs CPU", lambda: g_equivalence(a, device, report, budget)),
             ("tests", "tests marked gpu", lambda: gpu_tests(a, report, budget)),
             ("train", "training step", lambda: train_steps(a, device, report, budget)),
             ("ops", "ops per layer", lambda: ops_table(a, device, report, budget))]
    failed = False
    for key, title, run in steps:
        if key not in a.sections:
            continue
        if budget.left() < a.reserve_s:
            report.skip(title)
            continue
        print(f"{title} ({budget.left():.0f} s left)", flush=True)
        try:
            run()
        except Exception as e:  # noqa: BLE001 - a section that breaks is reported; the others still run
            report.section(key + "_error", {"error": _error(e), "trace": traceback.format_exc()[-3000:]})
            failed = True
    meta["used_s"] = round(budget.used(), 1)
    report.write()
    s = report.data["sections"]
    failed |= any("error" in r or not r.get("ok", True) for r in s.get("g_equivalence", []))
    failed |= any("error" in r for r in s.get("train_step", []))
    failed |= bool(s.get("gpu_tests", {}).get("counts", {}).get("failed"))
    print(f"wrote {report.out / 'gpu_acceptance.json'} and {report.out / 'gpu_acceptance.md'} "
          f"in {budget.used():.0f} s" + (f"; not reached: {len(report.data['not_reached'])} item(s)"
                                          if report.data["not_reached"] else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
