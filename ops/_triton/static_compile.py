"""Compile the ops' Triton kernels for a GPU target on a machine without a GPU, and read off their resources.

Triton compiles for a target without a driver when the active driver only *reports* that target: ``compile_only``
installs a stand-in driver (device 0, stream 0, ``GPUTarget("cuda", 90, 32)`` = H100 by default) and switches
``ops._triton.launch`` to ``JITFunction.run(..., warmup=True)``, which builds exactly the specialisation the launch
would get on the card (constexprs, int arguments equal to 1 or divisible by 16, pointer alignment) and runs
nothing. The ops' own host code is used unchanged, on ``meta`` tensors (no memory, data_ptr 0 = aligned), so
every launch site of a forward / backward / second-order call is what gets compiled.

``resources(compiled)`` reads registers, spills and stack from the cubin (``cuobjdump -res-usage``, shipped in
Triton's wheel), shared memory from the metadata and the instruction mix from the PTX; ``blocks_per_sm`` applies
the sm_90 occupancy limits. Not usable in a process that imported the kernels under ``TRITON_INTERPRET=1``.

    with compile_only() as launches:
        ops.filtered_lrelu(x_meta, fu, fd, b, up=2, down=2, padding=p, impl="triton")
    for rec in launches: print(rec.name, rec.grid, resources(rec.compiled))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget

from . import INTERPRETED

H100 = GPUTarget("cuda", 90, 32)

# sm_90 occupancy limits (CUDA occupancy calculator, compute capability 9.0).
SM90 = dict(regs=65536, reg_unit=256, max_warps=64, max_blocks=32, smem=233472, smem_reserved=1024, max_regs=255)


class _TargetDriver:
    """Stand-in for Triton's CUDA driver that only reports a target: enough to compile, nothing to launch."""

    def __init__(self, target: GPUTarget):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def is_active(self):
        return True


@dataclasses.dataclass
class Launch:
    """One recorded launch: the kernel's name, its grid, the compiled kernel and the arguments it was given."""

    name: str
    kernel: object
    grid: tuple
    compiled: object
    args: tuple
    kwargs: dict

    @property
    def params(self) -> dict:
        """The launch's arguments by parameter name (positional and keyword)."""
        p = dict(zip(self.kernel.arg_names, self.args))
        p.update(self.kwargs)
        return p

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= int(g)
        return n


@contextlib.contextmanager
def compile_only(target: GPUTarget = H100):
    """Inside: every ``ops._triton.launch`` compiles for ``target`` instead of running; yields the list of launches."""
    import ops._triton as pkg

    if INTERPRETED:
        raise RuntimeError("compile_only needs the kernels imported without TRITON_INTERPRET (use a subprocess)")
    from triton.runtime.driver import driver

    launches: list[Launch] = []
    # Triton prints ptxas's own -v log for every kernel it compiles when asked: keep the spills it reports, so
    # that ``resources`` need not run ptxas a second time (the longest step of a compile).
    log = io.StringIO()

    def record(kernel, grid, compiled, args, kwargs):
        text = log.getvalue()
        if text:
            found = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
            if found:
                _spills_from_log[compiled.hash] = sum(int(a) + int(b) for a, b in found)
            log.seek(0)
            log.truncate()
        launches.append(Launch(kernel.fn.__name__, kernel, grid, compiled, args, kwargs))

    previous = driver._active
    dump = triton.knobs.nvidia.dump_ptxas_log
    driver.set_active(_TargetDriver(target))
    pkg._recorder = record
    triton.knobs.nvidia.dump_ptxas_log = True
    try:
        with contextlib.redirect_stdout(log):
            yield launches
    finally:
        triton.knobs.nvidia.dump_ptxas_log = dump
        pkg._recorder = None
        driver._active = previous


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@dataclasses.dataclass
class Resources:
    regs: int
    spill_bytes: int  # spill stores + loads per thread (ptxas -v)
    stack: int
    shared: int
    num_warps: int
    blocks_per_sm: int
    mma: int  # tensor-core instructions in the PTX (mma.sync + wgmma)
    fma32: int  # fp32 FMA instructions in the PTX (static count)
    div64: int  # 64-bit integer division / remainder instructions in the PTX

    @property
    def warps_per_sm(self) -> int:
        return self.blocks_per_sm * self.num_warps


def blocks_per_sm(regs: int, num_warps: int, shared: int) -> int:
    """Resident blocks per SM on sm_90 for a kernel with these registers/thread, warps/block and shared bytes."""
    regs_per_warp = -(-regs * 32 // SM90["reg_unit"]) * SM90["reg_unit"]
    by_regs = (SM90["regs"] // max(regs_per_warp, 1)) // num_warps
    by_warps = SM90["max_warps"] // num_warps
    by_smem = SM90["smem"] // (shared + SM90["smem_reserved"])
    return min(by_regs, by_warps, by_smem, SM90["max_blocks"])


_cache: dict = {}
_spills_from_log: dict = {}  # compiled.hash -> spill bytes from the ptxas log of Triton's own compile


def _ptxas() -> str:
    """The ptxas Triton compiles with (the name and API moved between Triton versions)."""
    from triton.backends.nvidia import compiler as nv

    if hasattr(nv, "get_ptxas"):
        try:
            return nv.get_ptxas(90).path
        except TypeError:
            return nv.get_ptxas().path
    return triton.knobs.nvidia.ptxas.path


@functools.lru_cache(maxsize=None)
def _triton_ptxas_flags() -> tuple:
    """The register-allocation flag Triton passes to ptxas where it does (3.9: ``--regAllocOptLevel=2``): without
    it the spills of a variant can differ from those of the cubin Triton builds."""
    import inspect

    from triton.backends.nvidia import compiler as nv

    return ("--regAllocOptLevel=2",) if "--regAllocOptLevel=2" in inspect.getsource(nv) else ()


def _ptxas_spills(ptx: str, arch: int) -> int:
    """Spill store + load bytes per thread, from ``ptxas -v`` on the kernel's PTX (the cubin does not record them)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        suffix = "a" if arch >= 90 else ""
        log = subprocess.run([_ptxas(), "-v", *_triton_ptxas_flags(), f"--gpu-name=sm_{arch}{suffix}", src, "-o",
                              os.path.join(d, "k.o")],
                             check=True, capture_output=True, text=True).stderr
    found = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return sum(int(a) + int(b) for a, b in found)


def resources(compiled) -> Resources:
    """Registers, spills, stack (cubin), shared memory, occupancy and instruction mix (PTX) of a compiled kernel."""
    key = compiled.hash
    if key in _cache:
        return _cache[key]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        text = subprocess.run([_cuobjdump(), "-res-usage", f.name], check=True, capture_output=True,
                              text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    regs, stack, _, _ = (int(v) for v in m.groups())
    ptx = compiled.asm["ptx"]
    spills = _spills_from_log.get(key)
    if spills is None:  # compiled before (Triton's cache): ask ptxas
        spills = _ptxas_spills(ptx, compiled.metadata.target.arch)
    shared = int(compiled.metadata.shared)
    warps = int(compiled.metadata.num_warps)
    res = Resources(
        regs=regs, spill_bytes=spills, stack=stack, shared=shared, num_warps=warps,
        blocks_per_sm=blocks_per_sm(regs, warps, shared),
        mma=len(re.findall(r"^\s*(?:mma\.sync|wgmma\.mma_async)", ptx, re.M)),
        fma32=len(re.findall(r"^\s*fma\.rn\.f32", ptx, re.M)),
        div64=len(re.findall(r"^\s*(?:div|rem)\.[su]64", ptx, re.M)),
    )
    _cache[key] = res
    return res


# H100 SXM peaks used by the launch model (NVIDIA's data sheet, dense): HBM3 3.35 TB/s (the 3.3),
# fp32 on CUDA cores 67 TFLOP/s, tf32 tensor cores 495 TFLOP/s, fp16/bf16 tensor cores 989 TFLOP/s.
# In multiply-adds per second:
H100_BYTES_PER_S = 3.3e12
H100_MACS_PER_S = {"cuda_fp32": 33.5e12, "cuda_fp64": 33.5e12 / 2, "tc_tf32": 247e12, "tc_fp16": 495e12}
