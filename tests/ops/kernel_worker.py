"""Run Triton kernel checks in a separate process, so that an interpreter crash fails one test, not the run.

Under ``TRITON_INTERPRET=1`` an out-of-bounds access kills the process. The ``kernel_worker`` fixture
(tests/ops/conftest.py) keeps one spawned worker with the interpreter switched on; each test sends it
``(module, function, kwargs)``; a worker that dies fails the test that was running (with its exit code) and is
replaced for the next one. Check functions live in importable modules (``tests.ops.kernel_checks_*``), take plain
keyword arguments (dtypes as strings), and raise AssertionError on failure.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import traceback

import pytest

# One check may take a while under the interpreter, but never this long.
CHECK_TIMEOUT_S = 300


def _worker_main(conn) -> None:
    os.environ["TRITON_INTERPRET"] = "1"  # before ops._triton is imported (Triton reads it at @triton.jit)
    import torch

    torch.set_num_threads(1)  # the CI machine has 2 shared cores; OpenMP barriers under load cost ~30 ms a call
    while True:
        msg = conn.recv()
        if msg is None:
            return
        module, func, kwargs = msg
        try:
            getattr(importlib.import_module(module), func)(**kwargs)
            conn.send(("ok", ""))
        except BaseException:  # noqa: BLE001 -- every failure is reported back to the test
            conn.send(("fail", traceback.format_exc()))


class KernelWorker:
    """A spawned process that runs check functions under the Triton interpreter."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def run(self, module: str, func: str, **kwargs) -> None:
        """Run ``module.func(**kwargs)`` in the worker; pytest.fail with its traceback or its crash."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send((module, func, kwargs))
            if not self._conn.poll(CHECK_TIMEOUT_S):
                self.close()
                pytest.fail(f"{module}.{func}({kwargs}) did not finish in {CHECK_TIMEOUT_S} s", pytrace=False)
            status, text = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._proc = None
            pytest.fail(f"the Triton interpreter process crashed (exit code {code}) in {module}.{func}({kwargs}); "
                        f"an out-of-bounds access in a kernel kills it", pytrace=False)
        if status != "ok":
            pytest.fail(f"{module}.{func}({kwargs}) failed in the kernel worker:\n{text}", pytrace=False)

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._proc = None
