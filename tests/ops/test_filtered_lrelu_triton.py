"""The fused Triton filtered_lrelu kernel (ops/_triton/filtered_lrelu.py, docs/algorithm.md "Op: filtered_lrelu") under TRITON_INTERPRET=1.

The checks (tests/ops/_flrelu_cases.py) run in a worker process started with TRITON_INTERPRET=1 in its
environment, so the variable is set before any kernel module is imported (Triton reads it at decoration time).
An out-of-bounds access under the interpreter kills the process: then only the test that was running fails and
the next test starts a fresh worker. One worker serves many tests so torch/triton are imported once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[2]
from tests.ops._flrelu_cases import EXTRA, LAYERS  # noqa: E402  (after the environment is set)


class _Worker:
    def __init__(self, interpret: bool):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if interpret:
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        self.env = env
        self.proc = None

    def run(self, call: str) -> None:
        """Run `tests.ops._flrelu_cases.<call>` in the worker; fail the test with its traceback or its death."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import tests.ops._flrelu_cases as c; c.serve()"], cwd=ROOT, env=self.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write(call + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            err = self.proc.stderr.read()
            self.proc = None
            pytest.fail(f"worker died (exit {code}) running {call}\n{err[-4000:]}")
        result = json.loads(line)
        if not result["ok"]:
            pytest.fail(f"{call}\n{result['error']}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = _Worker(interpret=True)
    yield w
    w.close()


NAMES = [row[0] for row in LAYERS + EXTRA]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_layer_fp32_fp16(worker, name):
    """Forward + codes + gradients vs float64 (and the ops reference): fp32 with the clamp engaged, fp32 with
    tiny tiles (many programs: tile seams and code ownership), fp16 with the model's clamp 256 engaged."""
    worker.run(f"check_layer({name!r}, 'float32', clamp=0.8, max_dim=None, grads=True, x_scale=2.0)")
    worker.run(f"check_layer({name!r}, 'float32', clamp=None, max_dim=16, grads=False, n=1, c=2)")
    worker.run(f"check_layer({name!r}, 'float16', clamp=256.0, max_dim=None, grads=True, n=1, c=2, x_scale=400.0)")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["T-L3", "R-L0", "up2-down4", "up1-down1"])
def test_flip_filter_with_asymmetric_filters(worker, name):
    """The StyleGAN3 filters are symmetric, so flip_filter only shows with random asymmetric ones."""
    worker.run(f"check_layer({name!r}, 'float32', clamp=0.3, max_dim=None, grads=True, n=1, c=2, x_scale=2.0,"
               f" random_filters=True, flips=(False, True))")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["T-L3", "R-L2", "R-L0", "T-L0"])
def test_gpu_tile_plans(worker, name):
    """The plans a GPU runs (the interpreter's own plan prefers few large tiles), at a size where they use every
    formulation: the streaming kernel for separable stages (stage-1 patches at up 2 and up 4 with 32-sample
    patches, chunks of 32 rows with 8- and 16-row output blocks, stage 2's skipped blocks), the tile kernel for R's
    rank > 1 terms (on patches, with skipped blocks), and for T-L3 the tile kernel's plans of separable stages too
    (``gpu_tiles='tiles'``). float32 with gradients; float16 forward only: at this size a few pre-activations sit
    within fp16 rounding of zero (|v| ~ 1e-5 of the largest), where the stored sign may differ from float64's and the gradient legitimately jumps; the plans are
    the same for both dtypes, and the float16 backward's dots run in test_layer_fp32_fp16."""
    worker.run(f"check_layer({name!r}, 'float32', clamp=0.8, max_dim=None, grads=True, n=1, c=2, x_scale=2.0, "
               f"size=40, gpu_tiles=True)")
    worker.run(f"check_layer({name!r}, 'float16', clamp=256.0, max_dim=None, grads=False, n=1, c=2, x_scale=400.0, "
               f"size=40, gpu_tiles=True)")
    if name == "T-L3":  # the tile kernel's GPU plans for separable stages (those stream at this size)
        worker.run(f"check_layer({name!r}, 'float32', clamp=0.8, max_dim=None, grads=True, n=1, c=2, x_scale=2.0, "
                   f"size=40, gpu_tiles='tiles')")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["ToRGB", "up1-down1", "up2-down1"])
def test_streaming_geometries(worker, name):
    """The streaming kernel (a column strip walked down in chunks) at geometries the T/R plans of
    test_gpu_tile_plans do not reach: no stage-2 halo (ToRGB), chunks of 16 rows whose row block reaches a whole
    chunk further (down 1); asymmetric filters, both flips, gradients."""
    worker.run(f"check_layer({name!r}, 'float32', clamp=0.3, max_dim=None, grads=True, n=1, c=2, x_scale=2.0, "
               f"random_filters=True, flips=(False, True), gpu_tiles='stream')")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,size,clamp,second_order", [
    ("T-L0", 4, 0.5, True),  # separable (2,2), clamp engaged
    ("R-L0", 4, None, True),  # radial 2-D down filter: stage 2 forward, stage 1 of the backward
    ("up2-down4", 8, 0.5, False),  # 2-D up filter, (2,4); 64 elements, first order only (interpreter time)
    ("ToRGB", 4, 1.0, True),  # no filters, linear, clamp engaged
])
def test_gradcheck_gradgradcheck(worker, name, size, clamp, second_order):
    """Float64 gradcheck (and gradgradcheck: the backward's own backward is the coded forward) through the kernel."""
    worker.run(f"check_gradcheck({name!r}, {size}, {clamp!r}, second_order={second_order})")


def test_argument_errors(worker):
    worker.run("check_errors()")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", NAMES)
def test_gpu_full_size(name, dtype):
    w = _Worker(interpret=False)
    try:
        w.run(f"check_gpu_full_size({name!r}, {dtype!r})")
    finally:
        w.close()
