"""Triton bias_act vs the reference path (docs/algorithm.md "Op: bias_act"): forward, first and second order gradients, gradcheck.

On CPU each check runs in the kernel worker under TRITON_INTERPRET=1 (a kernel crash fails one test only).
"""

from __future__ import annotations

import pytest
import torch

from ops.bias_act import ACTIVATIONS

CHECKS = "tests.ops.kernel_checks_bias_act"
ACTS = sorted(ACTIVATIONS)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_forward(kernel_worker, act, dtype):
    kernel_worker.run(CHECKS, "check_forward", act=act, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("act", ACTS)
def test_grads_first_and_second_order(kernel_worker, act, dtype):
    kernel_worker.run(CHECKS, "check_grads", act=act, dtype=dtype)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_gradgradcheck(kernel_worker, act):
    kernel_worker.run(CHECKS, "check_gradcheck", act=act)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("act", ACTS)
def test_gpu(act):
    from tests.ops import kernel_checks_bias_act as checks

    for dtype in ("float32", "float16"):
        checks.check_forward(act, dtype, device="cuda")
        checks.check_grads(act, dtype, device="cuda")
    checks.check_gradcheck(act, device="cuda")


def test_env_var_selects_the_kernels(kernel_worker):
    kernel_worker.run(CHECKS, "check_env_override")
