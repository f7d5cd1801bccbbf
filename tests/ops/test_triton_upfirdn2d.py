"""Triton upfirdn2d vs the float64 definition and the reference path (docs/algorithm.md "Op: upfirdn2d"): forward for every
up/down/filter kind with negative paddings and flips, the models' calls in fp32 and fp16, first- and second-order
gradients, gradcheck. On CPU each check runs in the kernel worker under TRITON_INTERPRET=1."""

from __future__ import annotations

import itertools

import pytest
import torch

CHECKS = "tests.ops.kernel_checks_upfirdn2d"


@pytest.mark.parametrize("up,down,kind", list(itertools.product([1, 2, 4], [1, 2, 4], ["sep", "2d", "none"])))
def test_definition(kernel_worker, up, down, kind):
    kernel_worker.run(CHECKS, "check_definition", up=up, down=down, kind=kind)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_model_calls(kernel_worker, dtype):
    kernel_worker.run(CHECKS, "check_model_calls", dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_grads(kernel_worker, dtype):
    kernel_worker.run(CHECKS, "check_grads", dtype=dtype)


def test_gradcheck_gradgradcheck(kernel_worker):
    kernel_worker.run(CHECKS, "check_gradcheck")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu():
    from tests.ops import kernel_checks_upfirdn2d as checks

    for up, down, kind in itertools.product([1, 2, 4], [1, 2, 4], ["sep", "2d", "none"]):
        checks.check_definition(up, down, kind, device="cuda")
    for dtype in ("float32", "float16"):
        checks.check_model_calls(dtype, device="cuda")
        checks.check_grads(dtype, device="cuda")
    checks.check_gradcheck(device="cuda")
