"""Fused Triton filtered leaky ReLU (docs/algorithm.md "Op: filtered_lrelu"), forward and every order of gradient.

One kernel launch per call computes, tile by tile,

    bias -> zero-insertion upsampling + FIR ``fu`` (gain up²) -> leaky ReLU · gain -> clamp -> FIR ``fd`` + decimation

without ever writing the upsampled signal to global memory.

Formulation. Per axis every stage is a banded matrix acting on a tile. With ``g = fu`` flipped for true
convolution (``flip_filter=False``, docs/algorithm.md "Op: upfirdn2d" step 3), the upsampled-rate signal at index ``t`` is
``V[t] = up² · Σ_m X[m] · g_u[m·up + px0 − t]`` and the output is ``Y[o] = Σ_t A[t] · g_d[t − o·down]``
with ``A = clamp(lrelu(V)·gain)``. A program owns a block of outputs ``[o0, o0 + bo)`` of one (n, c) plane;
it builds the two banded matrices of each stage from the taps (index arithmetic + a gather of the tiny filter)
and evaluates

    V = Hy1 · X · Hx1ᵀ          (a [BT, BT] window of the upsampled image, in registers)
    Y = Hy2 · A · Hx2ᵀ          (the [BO, BO] output tile)

with ``tl.dot``. A separable filter is one rank-1 term; a full 2-D filter (config R's radial down filter) is
split by SVD into a sum of separable terms, dropping singular values below 1e-8 of the largest (under float32's
half-ulp; 1e-10 for float64), so the kernel stays separable-by-terms: rank 3–5 for StyleGAN3-R's jinc filters.

Polyphase by construction (issue 17). A dense banded matrix over the whole window is mostly zeros, so the dots do
not use one where they can avoid it:

- stage 1 reads its input from memory, so it runs on overlapping input patches: the window is PY x PX patches of
  [POY, POX] upsampled samples, patch (a, b) made from the [PIY, PIX] (16 x 16) inputs that reach it, starting at
  ``m0 + (a, b)·PO/up``. The map from a patch's inputs to its outputs is the same for every patch (shift
  invariance), so one small Toeplitz matrix per axis serves all of them and the dots contract over 16 inputs
  (K = 16, of which taps/up are nonzero per output) instead of the whole window;
- stage 2 reads the window from registers (no overlapping views there), so its x band is split into blocks
  (window quarters or halves x output halves) and the blocks the band does not touch are skipped.

Streaming (``_flrelu_stream_kernel``). A tile's window repeats the T2 − A2 samples of stage 2's halo that its
neighbours also compute (20 of 64 per axis for the up-by-4 layers' backward, which decimates by 4 with 24 taps).
On a GPU the planner may instead give a program a whole column strip of a plane and walk it down in chunks of
CH = 16·A2 upsampled-rate rows: each chunk goes through stage 1, the nonlinearity and stage 2's x pass once, then
feeds two y products, the rest of the previous row block of outputs (stored, complete) and the start of the next
(carried in registers). Rows are never recomputed along y, and only the registers of one chunk are live. The
planner costs both kernels' dots (padded shapes) per plane and launches the cheaper.

Precision. The dots run on tensor cores: fp16 inputs as fp16 operands with each filter matrix split into an fp16
hi part and a 2^11-scaled fp16 lo part (exact to ~2^-22; two dots), float32/bfloat16 inputs with the signal split
the same way after an exact power-of-two scale from the tile's largest exponent (three dots: hi·hi, hi·lo, lo·hi),
float64 on CUDA cores. Each stage's two passes run in the cheaper order (``XF1``/``XF2``).

Sign/clamp codes (docs/algorithm.md "Op: filtered_lrelu", "sign-bit trick"). When a gradient will be needed, the forward also writes a
2-bit code per element of the part of the upsampled signal that influences the output: bit 0 set = the value
was negative (slope applied), the value 2 = clamped (|lrelu(v)·gain| > clamp, gradient 0), 0 = passed. Four
codes are packed per byte, element ``t_x`` in bits ``2·(t_x mod 4)`` of byte ``t_x // 4``, in a uint8 tensor
``[N, C, sh, ceil16(sw) / 4]`` with ``sh, sw = (out − 1)·down + fd_taps`` per axis. Each code is written by
exactly one program (the one whose output block starts the owning stretch of ``down`` samples; the last block
also owns the tail), so the packed read-modify-free stores never race.

Backward. With the codes frozen the op is linear, ``Y = D (K ⊙ (gain·up² U X))``; its adjoint is the same
kernel run with the stages transposed (up↔down, fu↔fd, filters reversed, which is the flip toggle) and the
nonlinearity replaced by reading the codes (×slope where negative, ×0 where clamped). The adjoint of that
adjoint is again the coded forward direction, so every order of gradient is one more launch of the same
kernel. d/db = dX summed over N, H, W. Filters get no gradient.

Compute dtype: float32 for float16/bfloat16/float32 inputs (fp32 accumulation), float64 for float64 inputs
(so that ``gradcheck`` works). Output dtype = input dtype.
"""
from __future__ import annotations

import functools
import math
import os
import weakref

import torch
import triton
import triton.language as tl

from . import launch as launch_kernel

__all__ = ["filtered_lrelu_triton"]

# Codes written/read by the kernel (docs/algorithm.md "Op: filtered_lrelu").
CODE_PASS, CODE_NEG, CODE_CLAMP = 0, 1, 2

# Kernel modes.
_MODE_ACT = 0  # evaluate the nonlinearity, no codes
_MODE_ACT_CODES = 1  # evaluate the nonlinearity and write codes
_MODE_CODED = 2  # linear: multiply by the stored codes' derivative

# Offset that makes the dividend of an integer floor division non-negative: Triton's `//` truncates
# toward zero on GPU, numpy's floors; adding a multiple of the divisor makes both agree.
_FLOOR_BIAS = 1 << 16


# Dot modes (all accumulate in float32, float64 for float64 inputs):
_DOT_IEEE = 0  # CUDA-core FMA (float64 inputs: gradcheck)
_DOT_FP16 = 1  # tensor cores: fp16 data x (fp16 hi + 2^11-scaled fp16 lo) filter, 2 dots: float16 inputs
_DOT_FP16X3 = 2  # tensor cores: data and filter each split into two fp16 parts, 3 dots: float32/bfloat16 inputs
# A lo part is scaled by 2^11 into fp16's normal range (fp16 keeps 11 significant bits); the kernels undo it.


@triton.jit
def _split_filter(f):
    """fp32 filter matrix -> (hi, lo·2^11) fp16 parts: hi + lo·2^-11 equals f to ~2^-22 relative."""
    fh = f.to(tl.float16)
    fl = ((f - fh.to(tl.float32)) * 2048.0).to(tl.float16)
    return fh, fl


@triton.jit
def _split_data(d):
    """fp32 signal tile -> (hi, lo·2^11, 2^-k): a power-of-two scale puts max|d| in [1, 2) (exact, from the exponent
    bits), so neither part overflows or underflows fp16 whatever the tile's magnitude."""
    m = tl.max(tl.max(tl.abs(d), axis=1), axis=0)
    e = (m.to(tl.int32, bitcast=True) >> 23) & 255
    e = tl.minimum(tl.maximum(e, 1), 253)
    scale = ((254 - e) << 23).to(tl.float32, bitcast=True)  # 2^(127 - e)
    unscale = (e << 23).to(tl.float32, bitcast=True)  # 2^(e - 127)
    ds = d * scale
    dh = ds.to(tl.float16)
    dl = ((ds - dh.to(tl.float32)) * 2048.0).to(tl.float16)
    return dh, dl, unscale


@triton.jit
def _data_filter(d, f, DOT: tl.constexpr):
    """d @ f, f a banded filter matrix (float32/float64), d the signal."""
    if DOT == 0:
        r = tl.dot(d, f, input_precision="ieee")
    elif DOT == 1:
        fh, fl = _split_filter(f)
        d16 = d.to(tl.float16)
        r = tl.dot(d16, fh) + tl.dot(d16, fl) * (1.0 / 2048.0)
    else:
        fh, fl = _split_filter(f)
        dh, dl, unscale = _split_data(d)
        r = (tl.dot(dh, fh) + (tl.dot(dh, fl) + tl.dot(dl, fh)) * (1.0 / 2048.0)) * unscale
    return r


@triton.jit
def _filter_data(f, d, DOT: tl.constexpr):
    """f @ d, f a banded filter matrix (float32/float64), d the signal."""
    if DOT == 0:
        r = tl.dot(f, d, input_precision="ieee")
    elif DOT == 1:
        fh, fl = _split_filter(f)
        d16 = d.to(tl.float16)
        r = tl.dot(fh, d16) + tl.dot(fl, d16) * (1.0 / 2048.0)
    else:
        fh, fl = _split_filter(f)
        dh, dl, unscale = _split_data(d)
        r = (tl.dot(fh, dh) + (tl.dot(fl, dh) + tl.dot(fh, dl)) * (1.0 / 2048.0)) * unscale
    return r


@triton.jit
def _band_dot(d, h_ptr, K0: tl.constexpr, O0: tl.constexpr, HT: tl.constexpr, HO: tl.constexpr,
              A2: tl.constexpr, T2: tl.constexpr, DOT: tl.constexpr):
    """d @ G, G[k, i] = h[(K0 + k) − (O0 + i)·A2] (zero outside the taps): the block of a decimating band matrix
    between window samples [K0, K0 + HT) and outputs [O0, O0 + HO)."""
    idx = (K0 + tl.arange(0, HT))[:, None] - (O0 + tl.arange(0, HO))[None, :] * A2
    ok = (idx >= 0) & (idx < T2)
    g = tl.load(h_ptr + tl.where(ok, idx, 0), mask=ok, other=0.0)
    return _data_filter(d, g, DOT)


@triton.jit
def _halves(d, HT: tl.constexpr):
    """[M, 2·HT] -> its column halves [M, HT], [M, HT]."""
    return tl.split(tl.permute(tl.reshape(d, (d.shape[0], 2, HT)), (0, 2, 1)))


@triton.jit
def _blocks(d, NQ: tl.constexpr):
    """[M, W] -> its NQ (2 or 4) column blocks; with NQ = 2 the last two repeat the first two (never used)."""
    W: tl.constexpr = d.shape[1]
    lft, rgt = _halves(d, W // 2)
    if NQ == 4:
        b0, b1 = _halves(lft, W // 4)
        b2, b3 = _halves(rgt, W // 4)
    else:
        b0, b1, b2, b3 = lft, rgt, lft, rgt
    return b0, b1, b2, b3


@triton.jit
def _band_blocks(acc, b0, b1, b2, b3, h_ptr, J: tl.constexpr, SK2: tl.constexpr, WB: tl.constexpr,
                 HO: tl.constexpr, A2: tl.constexpr, T2: tl.constexpr, DOT: tl.constexpr):
    """acc + the x band products of output half J from the window blocks its SK2 bits (4·J + q) name."""
    if ((SK2 >> (4 * J)) & 1) != 0:
        acc += _band_dot(b0, h_ptr, 0, J * HO, WB, HO, A2, T2, DOT)
    if ((SK2 >> (4 * J + 1)) & 1) != 0:
        acc += _band_dot(b1, h_ptr, WB, J * HO, WB, HO, A2, T2, DOT)
    if ((SK2 >> (4 * J + 2)) & 1) != 0:
        acc += _band_dot(b2, h_ptr, 2 * WB, J * HO, WB, HO, A2, T2, DOT)
    if ((SK2 >> (4 * J + 3)) & 1) != 0:
        acc += _band_dot(b3, h_ptr, 3 * WB, J * HO, WB, HO, A2, T2, DOT)
    return acc


# Sizes, offsets and scalars are not specialised (== 1, divisible by 16): one compiled variant per geometry, dtype
# and mode, whatever the layer's size (the kernel's int64 index math gains nothing from the hints).
_RUNTIME_INTS = ["C", "in_h", "in_w", "out_h", "out_w", "code_h", "code_w", "code_stride", "c1y", "c1x", "c2y", "c2x",
                 "bo_y", "bo_x"]


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _flrelu_kernel(
    in_ptr, out_ptr, bias_ptr, codes_ptr,
    h1y_ptr, h1x_ptr, h2y_ptr, h2x_ptr,
    C, in_h, in_w, out_h, out_w,
    code_h, code_w, code_stride,
    c1y, c1x, c2y, c2x,
    bo_y, bo_x,
    gain, slope, clamp,
    A1Y: tl.constexpr, A1X: tl.constexpr, T1Y: tl.constexpr, T1X: tl.constexpr, R1: tl.constexpr,
    A2Y: tl.constexpr, A2X: tl.constexpr, T2Y: tl.constexpr, T2X: tl.constexpr, R2: tl.constexpr,
    BOY: tl.constexpr, BOX: tl.constexpr, BTY: tl.constexpr, BTX: tl.constexpr,
    BMY: tl.constexpr, BMX: tl.constexpr,
    PATCH1: tl.constexpr, PIY: tl.constexpr, PIX: tl.constexpr, POY: tl.constexpr, POX: tl.constexpr,
    SK2: tl.constexpr, NQ2: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, MODE: tl.constexpr, FLOOR_BIAS: tl.constexpr,
    DOT: tl.constexpr, XF1: tl.constexpr, XF2: tl.constexpr,
):
    """One program = one output block [bo_y, bo_x] of one (n, c) plane.

    Stage 1 ("up"):   V[t] = Σ_m In[m] · h1[m·A1 + c1 − t]   (h1 pre-scaled by the stage gain)
    Nonlinearity:     A = clamp(lrelu(V)·gain)  or  A = V·gain·code'(t)
    Stage 2 ("down"): Out[o] = Σ_t A[t] · h2[t − o·A2 − c2]
    per axis; h1/h2 are [R, T] stacks of rank-1 factors (y factors, x factors), summed over R.
    """
    # Index arithmetic in int64: it cannot overflow for large N·C·H·W, and the interpreter skips its (costly)
    # int32 overflow checks for 64-bit integers.
    pid_nc = tl.program_id(0).to(tl.int64)
    tile_y = tl.program_id(1).to(tl.int64)
    tile_x = tl.program_id(2).to(tl.int64)
    # (adding an int64 zero rather than `.to`: an int argument equal to 1 is specialised to a constexpr on GPU)
    zero64 = pid_nc * 0
    in_h = in_h + zero64
    in_w = in_w + zero64
    out_h = out_h + zero64
    out_w = out_w + zero64
    code_h = code_h + zero64
    code_w = code_w + zero64
    code_stride = code_stride + zero64
    c1y = c1y + zero64
    c1x = c1x + zero64
    c2y = c2y + zero64
    c2x = c2x + zero64
    bo_y = bo_y + zero64
    bo_x = bo_x + zero64
    cdt = h1y_ptr.dtype.element_ty  # compute dtype: float32 or float64

    # Block origins at the output rate, the intermediate (upsampled) rate and the input rate.
    o0y = tile_y * bo_y
    o0x = tile_x * bo_x
    t0y = o0y * A2Y + c2y
    t0x = o0x * A2X + c2x
    # m0 = ceil((t0 - c1) / A1), the first input sample that reaches t0.
    m0y = FLOOR_BIAS - (c1y - t0y + A1Y * FLOOR_BIAS) // A1Y
    m0x = FLOOR_BIAS - (c1x - t0x + A1X * FLOOR_BIAS) // A1X

    ky = tl.arange(0, BTY).to(tl.int64)
    kx = tl.arange(0, BTX).to(tl.int64)
    oy = tl.arange(0, BOY).to(tl.int64)
    ox = tl.arange(0, BOX).to(tl.int64)
    plane_in = pid_nc * in_h * in_w

    if PATCH1:
        # ---- stage 1 on overlapping input patches (polyphase by construction): the window is PY x PX patches of
        # [POY, POX] upsampled samples; patch (a, b) reads the [PIY, PIX] inputs starting at m0 + (a, b)·PO/A1,
        # which are all the inputs that reach it. The stage is shift-invariant from patch to patch, so one small
        # Toeplitz matrix per axis, H[i, k] = h1[d0 + i·A1 − k] (d0 = m0·A1 + c1 − t0 ∈ [0, A1)), serves every
        # patch: the dots contract over PI (16) inputs instead of the whole window.
        PY: tl.constexpr = BTY // POY
        PX: tl.constexpr = BTX // POX
        SY: tl.constexpr = POY // A1Y
        SX: tl.constexpr = POX // A1X
        rows = m0y + (tl.arange(0, PY).to(tl.int64) * SY)[:, None] + tl.arange(0, PIY).to(tl.int64)[None, :]
        cols = m0x + (tl.arange(0, PX).to(tl.int64) * SX)[:, None] + tl.arange(0, PIX).to(tl.int64)[None, :]
        rows_ok = (rows >= 0) & (rows < in_h)
        cols_ok = (cols >= 0) & (cols < in_w)
        in_mask = rows_ok[:, :, None, None] & cols_ok[None, None, :, :]  # [PY, PIY, PX, PIX]
        rows = tl.where(rows_ok, rows, 0)
        cols = tl.where(cols_ok, cols, 0)
        x = tl.load(in_ptr + plane_in + rows[:, :, None, None] * in_w + cols[None, None, :, :], mask=in_mask,
                    other=0.0).to(cdt)
        if HAS_BIAS:
            bval = tl.load(bias_ptr + pid_nc % C).to(cdt)
            x = tl.where(in_mask, x + bval, 0.0)
        x2 = tl.reshape(x, (PY * PIY * PX, PIX))
        d0y = m0y * A1Y + c1y - t0y
        d0x = m0x * A1X + c1x - t0x
        jy = d0y + (tl.arange(0, PIY).to(tl.int64) * A1Y)[:, None] - tl.arange(0, POY).to(tl.int64)[None, :]
        jx = d0x + (tl.arange(0, PIX).to(tl.int64) * A1X)[:, None] - tl.arange(0, POX).to(tl.int64)[None, :]
        jy_ok = (jy >= 0) & (jy < T1Y)
        jx_ok = (jx >= 0) & (jx < T1X)
        jy = tl.where(jy_ok, jy, 0)
        jx = tl.where(jx_ok, jx, 0)
        v4 = tl.zeros((PY * PX * POX, POY), dtype=cdt)
        for r in range(R1):
            hx = tl.load(h1x_ptr + r * T1X + jx, mask=jx_ok, other=0.0)  # [PIX, POX]
            hy = tl.load(h1y_ptr + r * T1Y + jy, mask=jy_ok, other=0.0)  # [PIY, POY]
            t = tl.reshape(_data_filter(x2, hx, DOT), (PY, PIY, PX, POX))  # x pass
            t = tl.reshape(tl.permute(t, (0, 2, 3, 1)), (PY * PX * POX, PIY))
            v4 += _data_filter(t, hy, DOT)  # y pass: [PY·PX·POX, POY]
        v = tl.reshape(tl.permute(tl.reshape(v4, (PY, PX, POX, POY)), (0, 3, 1, 2)), (BTY, BTX))
    else:
        my = m0y + tl.arange(0, BMY).to(tl.int64)
        mx = m0x + tl.arange(0, BMX).to(tl.int64)
        # ---- input tile (bias only on real samples: padding/zero-insertion stays zero, docs/algorithm.md "Op: filtered_lrelu" step 1)
        in_mask = ((my >= 0) & (my < in_h))[:, None] & ((mx >= 0) & (mx < in_w))[None, :]
        x = tl.load(in_ptr + plane_in + my[:, None] * in_w + mx[None, :], mask=in_mask, other=0.0).to(cdt)
        if HAS_BIAS:
            bval = tl.load(bias_ptr + pid_nc % C).to(cdt)
            x = tl.where(in_mask, x + bval, 0.0)

        # ---- stage 1: V = Σ_r Hy1_r · X · Hx1_rᵀ, Hy1[k, j] = h1y[m_j·A1 + c1 − (t0 + k)]
        iy1 = (my * A1Y + c1y - t0y)[None, :] - ky[:, None]  # [BTY, BMY]
        ix1 = (mx * A1X + c1x - t0x)[:, None] - kx[None, :]  # [BMX, BTX]
        iy1_ok = (iy1 >= 0) & (iy1 < T1Y)
        ix1_ok = (ix1 >= 0) & (ix1 < T1X)
        v = tl.zeros((BTY, BTX), dtype=cdt)
        for r in range(R1):
            hy = tl.load(h1y_ptr + r * T1Y + iy1, mask=iy1_ok, other=0.0)
            hxt = tl.load(h1x_ptr + r * T1X + ix1, mask=ix1_ok, other=0.0)
            if XF1:  # x pass first: [BMY, BTX], then y
                v += _filter_data(hy, _data_filter(x, hxt, DOT), DOT)
            else:  # y pass first: [BTY, BMX], then x
                v += _data_filter(_filter_data(hy, x, DOT), hxt, DOT)

    # ---- nonlinearity at the upsampled rate
    ty = t0y + ky
    tx = t0x + kx
    if MODE == 2:
        # Read the frozen codes; outside the stored region the incoming gradient is zero anyway.
        in_code = ((ty >= 0) & (ty < code_h))[:, None] & ((tx >= 0) & (tx < code_w))[None, :]
        tyc = tl.where((ty >= 0) & (ty < code_h), ty, 0)
        txc = tl.where((tx >= 0) & (tx < code_w), tx, 0)
        plane_code = pid_nc * code_h * code_stride
        byte = tl.load(codes_ptr + plane_code + tyc[:, None] * code_stride + (txc // 4)[None, :],
                       mask=in_code, other=0).to(tl.int32)
        code = (byte >> ((txc % 4) * 2)[None, :]) & 3
        deriv = tl.where(code >= 2, 0.0, tl.where((code & 1) != 0, slope, 1.0))
        a = v * (deriv * gain).to(cdt)
    else:
        neg = v < 0
        a = tl.where(neg, v * slope, v) * gain
        if HAS_CLAMP:
            clamped = (a > clamp) | (a < -clamp)
            a = tl.minimum(tl.maximum(a, -clamp), clamp)
        if MODE == 1:
            code = tl.where(neg, 1, 0)
            if HAS_CLAMP:
                code = tl.where(clamped, 2, code)
            # This program owns the codes of t in [t0, t0 + bo·A2) per axis; the last block also owns the tail.
            own_h = tl.where(tile_y == tl.num_programs(1) - 1, code_h - t0y, bo_y * A2Y)
            own_w = tl.where(tile_x == tl.num_programs(2) - 1, code_w - t0x, bo_x * A2X)
            own = (ky < own_h)[:, None] & (kx < own_w)[None, :]
            code = tl.where(own, code, 0) << ((kx % 4) * 2)[None, :]
            packed = tl.sum(tl.reshape(code, (BTY, BTX // 4, 4)), axis=2).to(tl.uint8)
            jb = tl.arange(0, BTX // 4).to(tl.int64)
            plane_code = pid_nc * code_h * code_stride
            # t0x is a multiple of 4 (the launcher picks bo_x·A2X ≡ 0 mod 4 and c2x = 0 in this mode).
            tl.store(codes_ptr + plane_code + ty[:, None] * code_stride + (t0x // 4 + jb)[None, :], packed,
                     mask=(ky < own_h)[:, None] & (jb * 4 < own_w)[None, :])

    # ---- stage 2: Out = Σ_r Hy2_r · A · Hx2_rᵀ, Hy2[o, k] = h2y[k − o·A2]
    iy2 = ky[None, :] - oy[:, None] * A2Y  # [BOY, BTY]
    iy2_ok = (iy2 >= 0) & (iy2 < T2Y)
    py = o0y + oy
    plane_out = pid_nc * out_h * out_w
    if SK2 == 0:
        ix2 = kx[:, None] - ox[None, :] * A2X  # [BTX, BOX]
        ix2_ok = (ix2 >= 0) & (ix2 < T2X)
        acc = tl.zeros((BOY, BOX), dtype=cdt)
        for r in range(R2):
            gy = tl.load(h2y_ptr + r * T2Y + iy2, mask=iy2_ok, other=0.0)
            gxt = tl.load(h2x_ptr + r * T2X + ix2, mask=ix2_ok, other=0.0)
            if XF2:
                acc += _filter_data(gy, _data_filter(a, gxt, DOT), DOT)
            else:
                acc += _data_filter(_filter_data(gy, a, DOT), gxt, DOT)
        px = o0x + ox
        out_mask = ((oy < bo_y) & (py < out_h))[:, None] & ((ox < bo_x) & (px < out_w))[None, :]
        tl.store(out_ptr + plane_out + py[:, None] * out_w + px[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # The x band split in NQ2 x 2 blocks (window halves or quarters x output halves); SK2 bit 4·j + q says
        # whether output half j reads window block q at all: the blocks of zeros are skipped.
        WB: tl.constexpr = BTX // NQ2
        HO: tl.constexpr = BOX // 2
        acc0 = tl.zeros((BOY, HO), dtype=cdt)
        acc1 = tl.zeros((BOY, HO), dtype=cdt)
        if XF2:
            a0, a1, a2, a3 = _blocks(a, NQ2)
        for r in range(R2):
            gy = tl.load(h2y_ptr + r * T2Y + iy2, mask=iy2_ok, other=0.0)
            hx2 = h2x_ptr + r * T2X
            if XF2:  # x pass on the window's blocks, then y per output half
                t0 = _band_blocks(tl.zeros((BTY, HO), dtype=cdt), a0, a1, a2, a3, hx2, 0, SK2, WB, HO, A2X, T2X, DOT)
                t1 = _band_blocks(tl.zeros((BTY, HO), dtype=cdt), a0, a1, a2, a3, hx2, 1, SK2, WB, HO, A2X, T2X, DOT)
                acc0 += _filter_data(gy, t0, DOT)
                acc1 += _filter_data(gy, t1, DOT)
            else:  # y pass on the whole window, then x on its blocks
                c0, c1, c2, c3 = _blocks(_filter_data(gy, a, DOT), NQ2)
                acc0 = _band_blocks(acc0, c0, c1, c2, c3, hx2, 0, SK2, WB, HO, A2X, T2X, DOT)
                acc1 = _band_blocks(acc1, c0, c1, c2, c3, hx2, 1, SK2, WB, HO, A2X, T2X, DOT)
        oh_ = tl.arange(0, HO).to(tl.int64)
        row_ok = ((oy < bo_y) & (py < out_h))[:, None]
        px = o0x + oh_
        tl.store(out_ptr + plane_out + py[:, None] * out_w + px[None, :], acc0.to(out_ptr.dtype.element_ty),
                 mask=row_ok & ((oh_ < bo_x) & (px < out_w))[None, :])
        px = o0x + HO + oh_
        tl.store(out_ptr + plane_out + py[:, None] * out_w + px[None, :], acc1.to(out_ptr.dtype.element_ty),
                 mask=row_ok & ((oh_ + HO < bo_x) & (px < out_w))[None, :])


@triton.jit
def _row_halves(d, H: tl.constexpr):
    """[2·H, N] -> its row halves [H, N], [H, N]."""
    return tl.split(tl.permute(tl.reshape(d, (2, H, d.shape[1])), (1, 2, 0)))


@triton.jit
def _join_halves(t0, t1):
    """Column halves [M, H], [M, H] -> [M, 2·H] (the inverse of ``_halves``)."""
    return tl.reshape(tl.permute(tl.join(t0, t1), (0, 2, 1)), (t0.shape[0], 2 * t0.shape[1]))


_STREAM_RUNTIME_INTS = ["C", "in_h", "in_w", "out_h", "out_w", "code_h", "code_w", "code_stride", "c1y", "c1x",
                        "c2y", "c2x", "bo_x", "n_blocks_y", "row_lo", "row_hi"]


@triton.jit(do_not_specialize=_STREAM_RUNTIME_INTS)
def _flrelu_stream_kernel(
    in_ptr, out_ptr, bias_ptr, codes_ptr,
    h1y_ptr, h1x_ptr, h2y_ptr, h2x_ptr,
    C, in_h, in_w, out_h, out_w,
    code_h, code_w, code_stride,
    c1y, c1x, c2y, c2x,
    bo_x, n_blocks_y, row_lo, row_hi,
    gain, slope, clamp,
    A1Y: tl.constexpr, A1X: tl.constexpr, T1Y: tl.constexpr, T1X: tl.constexpr, R1: tl.constexpr,
    A2Y: tl.constexpr, A2X: tl.constexpr, T2Y: tl.constexpr, T2X: tl.constexpr, R2: tl.constexpr,
    OB: tl.constexpr, OBV: tl.constexpr, BOX: tl.constexpr, CH: tl.constexpr, BTX: tl.constexpr, EH: tl.constexpr,
    BMY: tl.constexpr, BMX: tl.constexpr,
    PATCH1: tl.constexpr, PIY: tl.constexpr, PIX: tl.constexpr, POY: tl.constexpr, POX: tl.constexpr,
    SK2: tl.constexpr, NQ2: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, MODE: tl.constexpr, FLOOR_BIAS: tl.constexpr,
    DOT: tl.constexpr, XF1: tl.constexpr,
):
    """One program = one column strip of outputs (``bo_x`` wide) of one (n, c) plane, walked down in row blocks.

    The window is never held whole: chunk c is the CH = OBV·A2Y upsampled-rate rows that output row block c (OBV
    rows, computed as OB >= 16 for the dots) starts on (rows c·CH + c2y ...). A chunk is built by stage 1 (as ``_flrelu_kernel``), passed through the nonlinearity,
    filtered and decimated along x, and then feeds two y products: the rest of row block c − 1 (which reaches EH
    rows into chunk c; stored now, complete) and the first part of row block c (carried to the next chunk). Chunks
    do not overlap, so no upsampled-rate row is computed twice (the tiles of ``_flrelu_kernel`` recompute a
    T2 − A2 row halo each); chunks outside the rows that reach the output (``row_lo``, ``row_hi``) are skipped.
    """
    pid_nc = tl.program_id(0).to(tl.int64)
    tile_x = tl.program_id(1).to(tl.int64)
    zero64 = pid_nc * 0
    in_h = in_h + zero64
    in_w = in_w + zero64
    out_h = out_h + zero64
    out_w = out_w + zero64
    code_h = code_h + zero64
    code_w = code_w + zero64
    code_stride = code_stride + zero64
    c1y = c1y + zero64
    c1x = c1x + zero64
    c2y = c2y + zero64
    c2x = c2x + zero64
    bo_x = bo_x + zero64
    row_lo = row_lo + zero64
    row_hi = row_hi + zero64
    cdt = h1y_ptr.dtype.element_ty

    o0x = tile_x * bo_x
    t0x = o0x * A2X + c2x
    m0x = FLOOR_BIAS - (c1x - t0x + A1X * FLOOR_BIAS) // A1X
    ky = tl.arange(0, CH).to(tl.int64)
    kx = tl.arange(0, BTX).to(tl.int64)
    oy = tl.arange(0, OB).to(tl.int64)
    ox = tl.arange(0, BOX).to(tl.int64)
    plane_in = pid_nc * in_h * in_w
    plane_out = pid_nc * out_h * out_w
    plane_code = pid_nc * code_h * code_stride
    if HAS_BIAS:
        bval = tl.load(bias_ptr + pid_nc % C).to(cdt)
    px = o0x + ox
    col_ok = ((ox < bo_x) & (px < out_w))[None, :]
    if MODE == 1:
        own_w = tl.where(tile_x == tl.num_programs(1) - 1, code_w - t0x, bo_x * A2X)

    carry = tl.zeros((OB, BOX), dtype=cdt)
    for c in range(0, n_blocks_y + 1):
        t0y = c * CH + c2y
        nxt = tl.zeros((OB, BOX), dtype=cdt)
        if (t0y < row_hi) & (t0y + CH > row_lo):
            m0y = FLOOR_BIAS - (c1y - t0y + A1Y * FLOOR_BIAS) // A1Y
            # ---- stage 1: the chunk's [CH, BTX] upsampled-rate rows
            if PATCH1:
                PY: tl.constexpr = CH // POY
                PX: tl.constexpr = BTX // POX
                SY: tl.constexpr = POY // A1Y
                SX: tl.constexpr = POX // A1X
                rows = m0y + (tl.arange(0, PY).to(tl.int64) * SY)[:, None] + tl.arange(0, PIY).to(tl.int64)[None, :]
                cols = m0x + (tl.arange(0, PX).to(tl.int64) * SX)[:, None] + tl.arange(0, PIX).to(tl.int64)[None, :]
                rows_ok = (rows >= 0) & (rows < in_h)
                cols_ok = (cols >= 0) & (cols < in_w)
                in_mask = rows_ok[:, :, None, None] & cols_ok[None, None, :, :]
                rows = tl.where(rows_ok, rows, 0)
                cols = tl.where(cols_ok, cols, 0)
                x = tl.load(in_ptr + plane_in + rows[:, :, None, None] * in_w + cols[None, None, :, :], mask=in_mask,
                            other=0.0).to(cdt)
                if HAS_BIAS:
                    x = tl.where(in_mask, x + bval, 0.0)
                x2 = tl.reshape(x, (PY * PIY * PX, PIX))
                d0y = m0y * A1Y + c1y - t0y
                d0x = m0x * A1X + c1x - t0x
                jy = d0y + (tl.arange(0, PIY).to(tl.int64) * A1Y)[:, None] - tl.arange(0, POY).to(tl.int64)[None, :]
                jx = d0x + (tl.arange(0, PIX).to(tl.int64) * A1X)[:, None] - tl.arange(0, POX).to(tl.int64)[None, :]
                jy_ok = (jy >= 0) & (jy < T1Y)
                jx_ok = (jx >= 0) & (jx < T1X)
                jy = tl.where(jy_ok, jy, 0)
                jx = tl.where(jx_ok, jx, 0)
                v4 = tl.zeros((PY * PX * POX, POY), dtype=cdt)
                for r in range(R1):
                    hx = tl.load(h1x_ptr + r * T1X + jx, mask=jx_ok, other=0.0)
                    hy = tl.load(h1y_ptr + r * T1Y + jy, mask=jy_ok, other=0.0)
                    t = tl.reshape(_data_filter(x2, hx, DOT), (PY, PIY, PX, POX))
                    t = tl.reshape(tl.permute(t, (0, 2, 3, 1)), (PY * PX * POX, PIY))
                    v4 += _data_filter(t, hy, DOT)
                v = tl.reshape(tl.permute(tl.reshape(v4, (PY, PX, POX, POY)), (0, 3, 1, 2)), (CH, BTX))
            else:
                my = m0y + tl.arange(0, BMY).to(tl.int64)
                mx = m0x + tl.arange(0, BMX).to(tl.int64)
                my_ok = (my >= 0) & (my < in_h)
                mx_ok = (mx >= 0) & (mx < in_w)
                in_mask = my_ok[:, None] & mx_ok[None, :]
                x = tl.load(in_ptr + plane_in + tl.where(my_ok, my, 0)[:, None] * in_w + tl.where(mx_ok, mx, 0)[None, :],
                            mask=in_mask, other=0.0).to(cdt)
                if HAS_BIAS:
                    x = tl.where(in_mask, x + bval, 0.0)
                iy1 = (my * A1Y + c1y - t0y)[None, :] - ky[:, None]  # [CH, BMY]
                ix1 = (mx * A1X + c1x - t0x)[:, None] - kx[None, :]  # [BMX, BTX]
                iy1_ok = (iy1 >= 0) & (iy1 < T1Y)
                ix1_ok = (ix1 >= 0) & (ix1 < T1X)
                iy1 = tl.where(iy1_ok, iy1, 0)
                ix1 = tl.where(ix1_ok, ix1, 0)
                v = tl.zeros((CH, BTX), dtype=cdt)
                for r in range(R1):
                    hy = tl.load(h1y_ptr + r * T1Y + iy1, mask=iy1_ok, other=0.0)
                    hxt = tl.load(h1x_ptr + r * T1X + ix1, mask=ix1_ok, other=0.0)
                    if XF1:
                        v += _filter_data(hy, _data_filter(x, hxt, DOT), DOT)
                    else:
                        v += _data_filter(_filter_data(hy, x, DOT), hxt, DOT)

            # ---- nonlinearity at the upsampled rate
            ty = t0y + ky
            tx = t0x + kx
            if MODE == 2:
                ty_ok = (ty >= 0) & (ty < code_h)
                tx_ok = (tx >= 0) & (tx < code_w)
                tyc = tl.where(ty_ok, ty, 0)
                txc = tl.where(tx_ok, tx, 0)
                byte = tl.load(codes_ptr + plane_code + tyc[:, None] * code_stride + (txc // 4)[None, :],
                               mask=ty_ok[:, None] & tx_ok[None, :], other=0).to(tl.int32)
                code = (byte >> ((txc % 4) * 2)[None, :]) & 3
                deriv = tl.where(code >= 2, 0.0, tl.where((code & 1) != 0, slope, 1.0))
                a = v * (deriv * gain).to(cdt)
            else:
                neg = v < 0
                a = tl.where(neg, v * slope, v) * gain
                if HAS_CLAMP:
                    clamped = (a > clamp) | (a < -clamp)
                    a = tl.minimum(tl.maximum(a, -clamp), clamp)
                if MODE == 1:
                    # Chunks do not overlap: this program owns every code row of its chunk (rows < code_h) and,
                    # along x, t in [t0x, t0x + bo_x·A2X) (the last strip also owns the tail).
                    code = tl.where(neg, 1, 0)
                    if HAS_CLAMP:
                        code = tl.where(clamped, 2, code)
                    own_row = (ty >= 0) & (ty < code_h)
                    own = own_row[:, None] & (kx < own_w)[None, :]
                    code = tl.where(own, code, 0) << ((kx % 4) * 2)[None, :]
                    packed = tl.sum(tl.reshape(code, (CH, BTX // 4, 4)), axis=2).to(tl.uint8)
                    jb = tl.arange(0, BTX // 4).to(tl.int64)
                    tl.store(codes_ptr + plane_code + tl.where(own_row, ty, 0)[:, None] * code_stride
                             + (t0x // 4 + jb)[None, :], packed, mask=own_row[:, None] & (jb * 4 < own_w)[None, :])

            # ---- stage 2: x pass on the chunk, then the two y products. The bands are the same for every chunk
            # (block c's rows from chunk c, block c − 1's from its first EH rows) but are rebuilt here, in int32,
            # rather than held in registers through stage 1 (held, they made the coded 16-warp variants spill).
            oy32 = tl.arange(0, OB)
            iym = tl.arange(0, CH)[None, :] - oy32[:, None] * A2Y  # [OB, CH]
            iym_ok = (iym >= 0) & (iym < T2Y) & (oy32 < OBV)[:, None]
            iym = tl.where(iym_ok, iym, 0)
            if EH > 0:
                iyt = (tl.arange(0, EH) + CH)[None, :] - oy32[:, None] * A2Y  # [OB, EH]
                iyt_ok = (iyt >= 0) & (iyt < T2Y) & (oy32 < OBV)[:, None]
                iyt = tl.where(iyt_ok, iyt, 0)
            if SK2 == 0:
                ix2 = tl.arange(0, BTX)[:, None] - tl.arange(0, BOX)[None, :] * A2X  # [BTX, BOX]
                ix2_ok = (ix2 >= 0) & (ix2 < T2X)
                ix2 = tl.where(ix2_ok, ix2, 0)
            if SK2 != 0:
                WB: tl.constexpr = BTX // NQ2
                HO: tl.constexpr = BOX // 2
                a0, a1, a2, a3 = _blocks(a, NQ2)
            for r in range(R2):
                if SK2 != 0:
                    hx2 = h2x_ptr + r * T2X
                    u0 = _band_blocks(tl.zeros((CH, HO), dtype=cdt), a0, a1, a2, a3, hx2, 0, SK2, WB, HO, A2X, T2X,
                                      DOT)
                    u1 = _band_blocks(tl.zeros((CH, HO), dtype=cdt), a0, a1, a2, a3, hx2, 1, SK2, WB, HO, A2X, T2X,
                                      DOT)
                    u = _join_halves(u0, u1)
                else:
                    gxt = tl.load(h2x_ptr + r * T2X + ix2, mask=ix2_ok, other=0.0)
                    u = _data_filter(a, gxt, DOT)  # [CH, BOX]
                gm = tl.load(h2y_ptr + r * T2Y + iym, mask=iym_ok, other=0.0)
                nxt += _filter_data(gm, u, DOT)
                if EH > 0:
                    gt = tl.load(h2y_ptr + r * T2Y + iyt, mask=iyt_ok, other=0.0)
                    if EH == CH:
                        carry += _filter_data(gt, u, DOT)
                    else:
                        u_top, u_bot = _row_halves(u, EH)
                        carry += _filter_data(gt, u_top, DOT)
        # row block c − 1 is complete
        py = (c - 1) * OBV + oy
        row_ok = (py >= 0) & (py < out_h) & (oy < OBV)
        tl.store(out_ptr + plane_out + tl.where(row_ok, py, 0)[:, None] * out_w + tl.where(col_ok, px[None, :], 0),
                 carry.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok)
        carry = nxt


# ----------------------------------------------------------------------------------------------------------
# Host side: filter factors, geometry, tiling.

def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Singular values kept, relative to the largest: 1e-8 is under float32's half-ulp (6e-8), so a dropped term changes
# no float32/float16 result (R's jinc filters: rank 3-5 instead of 4-6); float64 (gradcheck) keeps down to 1e-10.
_SVD_REL_TOL = {torch.float64: 1e-10}
_SVD_REL_TOL_LOW = 1e-8
_factor_cache: dict = {}


def _factor_filter(f: torch.Tensor | None, flip_filter: bool, device, cdtype):
    """Filter -> (hy [R, Ty], hx [R, Tx]) rank-1 factors of the correlation kernel g, g[a, b] = Σ_r hy[r,a]·hx[r,b].

    g is `f` flipped on every axis unless `flip_filter` (true convolution, docs/algorithm.md "Op: upfirdn2d"). None -> identity [[1]].
    1-D [T] (separable: along x, then y) -> R = 1. 2-D [fh, fw] -> SVD, dropping singular values below
    1e-8 of the largest (1e-10 for float64). Results are cached per filter tensor object and version (filters are
    fixed buffers), so a CUDA filter costs one host round-trip (the SVD) the first time only.
    """
    if f is None:
        one = torch.ones(1, 1, dtype=cdtype, device=device)
        return one, one
    key = (id(f), flip_filter, str(device), cdtype)
    version = None if f.is_inference() else f._version
    hit = _factor_cache.get(key)
    if hit is not None and hit[0]() is f and hit[1] == version:
        return hit[2], hit[3]
    if f.ndim == 1:
        hy = hx = (f if flip_filter else f.flip(0)).detach().to(device=device, dtype=cdtype).reshape(1, -1)
    else:
        g = (f if flip_filter else f.flip([0, 1])).detach().to(device="cpu", dtype=torch.float64)
        u, s, vh = torch.linalg.svd(g)
        keep = max(1, int((s > s[0] * _SVD_REL_TOL.get(cdtype, _SVD_REL_TOL_LOW)).sum()))
        root = s[:keep].sqrt()
        hy = (u[:, :keep] * root).T.to(device=device, dtype=cdtype)
        hx = (vh[:keep] * root[:, None]).to(device=device, dtype=cdtype)
    hy, hx = hy.contiguous(), hx.contiguous()
    if len(_factor_cache) > 256:
        _factor_cache.clear()
    _factor_cache[key] = (weakref.ref(f), version, hy, hx)
    return hy, hx


def _pow2(n: int) -> int:
    return max(16, 1 << (max(1, n) - 1).bit_length())


def _axis_blocks(bo: int, a1: int, t1: int, a2: int, t2: int):
    """Register block sizes (BO, BT, BM) for `bo` outputs per block along one axis."""
    bt = (bo - 1) * a2 + t2  # upsampled-rate samples the block reads
    bm = -(-(bt + t1 - 1) // a1)  # input samples that reach them
    return _pow2(bo), _pow2(bt), _pow2(bm)


def _patch_inputs(a1: int, t1: int, po: int):
    """Inputs per stage-1 patch (a power of two >= 16) that reach `po` consecutive upsampled samples (up `a1`, `t1`
    taps), or None where patches do not pay (po not a multiple of a1, or a patch would read more than it makes)."""
    if po % a1:
        return None
    pi = _pow2((po + t1 - 2) // a1 + 1)
    return pi if pi <= po else None


def _patch_plan(r1, a1y, t1y, a1x, t1x, BTY, BTX):
    """Cheapest stage-1 patch shape (macs, PIY, PIX, POY, POX) for a [BTY, BTX] window, or None.

    Per rank-1 term: an x pass [PY·PIY·PX, PIX] @ [PIX, POX], then a y pass [PY·PX·POX, PIY] @ [PIY, POY]."""
    best = None
    poy = 16
    while poy <= BTY:
        piy = _patch_inputs(a1y, t1y, poy)
        pox = 16
        while piy is not None and pox <= BTX:
            pix = _patch_inputs(a1x, t1x, pox)
            if pix is not None:
                macs = r1 * (BTY // poy) * (BTX // pox) * piy * pox * (pix + poy)
                if best is None or macs < best[0]:
                    best = (macs, piy, pix, poy, pox)
            pox *= 2
        poy *= 2
    return best


def _stage_macs(r1, r2, BOY, BOX, BTY, BTX, BMY, BMX, ay=None, ax=None):
    """Multiply-adds of one program's dots (padded shapes) and the cheaper pass order of each stage.

    Stage 1 maps the [BMY, BMX] input to the [BTY, BTX] window, stage 2 the window to the [BOY, BOX] outputs; per
    rank-1 term each stage is an x pass and a y pass, in either order. Stage 1 runs on patches where that is
    cheaper (``ay``/``ax`` = (a1, t1, a2, t2) per axis). Returns (macs, x_first_1, x_first_2, patch) with patch
    None or (PIY, PIX, POY, POX)."""
    s1x = BMY * BMX * BTX + BTY * BMY * BTX
    s1y = BTY * BMY * BMX + BTY * BMX * BTX
    s1 = r1 * min(s1x, s1y)
    patch = None
    if ay is not None:
        pp = _patch_plan(r1, ay[0], ay[1], ax[0], ax[1], BTY, BTX)
        if pp is not None and pp[0] < s1:
            s1, patch = pp[0], pp[1:]
    s2, xf2, sk2, nq2 = _stage2_plan(BOY, BOX, BTY, BTX, ax[2] if ax is not None else None,
                                     ax[3] if ax is not None else None, r2)
    return s1 + r2 * s2, s1x <= s1y, xf2, patch, (sk2, nq2)


def _stage2_plan(BOY, BOX, BTY, BTX, a2x, t2x, r2=1):
    """Stage 2 per rank-1 term: (multiply-adds, x pass first, SK2, NQ2). SK2 = 0: dense band dots; else the x band
    in NQ2 x 2 blocks (window halves or quarters x output halves), bit 4·j + q set where output half j reads window
    block q. Quarters only for a separable stage 2 (with R's rank 3-5 terms they spilled: 48 bytes, sm_90)."""
    s2x = BTY * BTX * BOX + BOY * BTY * BOX
    s2y = BOY * BTY * BTX + BOY * BTX * BOX
    best = (min(s2x, s2y), s2x <= s2y, 0, 2)
    if a2x is None or BOX < 32:
        return best
    ho = BOX // 2
    for nq in (2, 4) if r2 == 1 else (2,):
        wb = BTX // nq
        if wb < 16:
            break
        sk2 = 0
        for j in range(2):
            lo, hi = j * ho * a2x, (j * ho + ho - 1) * a2x + t2x - 1
            for q in range(nq):
                if q * wb <= hi and (q + 1) * wb - 1 >= lo:
                    sk2 |= 1 << (4 * j + q)
        n = bin(sk2).count("1")
        if n == 2 * nq:
            continue
        k2x = n * BTY * wb * ho + BOY * BTY * BOX
        k2y = BOY * BTY * BTX + n * BOY * wb * ho
        if min(k2x, k2y) < best[0]:
            best = (min(k2x, k2y), k2x <= k2y, sk2, nq)
    return best


# Largest upsampled-rate window per program on a GPU (elements). Up to 2048 (a [32, 64] fp32 window is 16 registers
# per thread) a program runs 4 warps; up to 4096 ([64, 64] or [32, 128]) 16 warps, one 16-warp block per SM within
# 128 registers for every T/R variant, fp32 and rank > 1 included, since stage 1 runs on patches (sm_90 compile,
# tests/ops/test_static_budget.py). 8192-sample windows at 16 warps spilled (216 bytes) in some backward variants.
_MAX_WINDOW = 4096
_SMALL_WINDOW = 2048
_GPU_PROGRAM_COST = 2e3
_WINDOW_COST = 16


@functools.lru_cache(maxsize=512)
def _choose_tiles(ay, ax, r1, r2, out_h, out_w, max_dim, interpret, max_window=_SMALL_WINDOW):
    """Pick outputs per block (bo_y, bo_x), minimising the dots' multiply-adds per plane (padded shapes, best
    pass order) plus, under the interpreter, a large per-program overhead. bo_x·down is a multiple of 4 (a block's
    codes start on a byte). On a GPU the window is capped at ``max_window`` elements (registers)."""
    def cands(n, step):
        top = min(-(-n // step) * step, 256)
        return list(range(step, top + 1, step))

    overhead = 2e6 if interpret else _GPU_PROGRAM_COST
    best = None
    step_x = 4 // math.gcd(4, ax[2])
    for by in cands(out_h, 1):
        BOY, BTY, BMY = _axis_blocks(by, *ay)
        if max(BTY, BMY, BOY) > max_dim and by > 1:
            break
        for bx in cands(out_w, step_x):
            BOX, BTX, BMX = _axis_blocks(bx, *ax)
            if max(BTX, BMX, BOX) > max_dim and bx > step_x:
                break
            if not interpret and BTY * BTX > max_window and (by > 1 or bx > step_x):
                continue
            work, xf1, xf2, patch, sk2 = _stage_macs(r1, r2, BOY, BOX, BTY, BTX, BMY, BMX, ay, ax)
            cost = (-(-out_h // by)) * (-(-out_w // bx)) * (work + _WINDOW_COST * BTY * BTX + overhead)
            if best is None or cost < best[0]:
                best = (cost, by, bx, BOY, BOX, BTY, BTX, BMY, BMX, xf1, xf2, patch, sk2)
    return best


# Streaming plans (``_flrelu_stream_kernel``): a chunk is up to 2048 upsampled-rate samples at 4 warps (170-212
# registers, 2 blocks per SM, sm_90). The coded (backward) variants spilled at 4096-sample chunks on 16 warps
# (72-608 bytes) and at 8192.
_MAX_CHUNK = 2048
# Stream only where the model saves more than 3 % (the tile kernel has the longer record).
_STREAM_MARGIN = 0.97


def _stream_chunk_macs(r1, r2, ob, BOX, CH, BTX, EH, BMY, BMX, ay, ax):
    """Multiply-adds of one chunk of ``_flrelu_stream_kernel`` (padded dot shapes), stage 1's order and patch, and
    the x pass's blocks: (macs, xf1, patch, (SK2, NQ2))."""
    s1x = BMY * BMX * BTX + CH * BMY * BTX
    s1y = CH * BMY * BMX + CH * BMX * BTX
    s1 = r1 * min(s1x, s1y)
    patch = None
    pp = _patch_plan(r1, ay[0], ay[1], ax[0], ax[1], CH, BTX)
    if pp is not None and pp[0] < s1:
        s1, patch = pp[0], pp[1:]
    xpass, sk = CH * BTX * BOX, (0, 2)
    if BOX >= 32:
        ho = BOX // 2
        for nq in (2, 4) if r2 == 1 else (2,):
            wb = BTX // nq
            if wb < 16:
                break
            sk2 = _block_bits(ho, nq, wb, ax[2], ax[3])
            n = bin(sk2).count("1")
            if n < 2 * nq and n * CH * wb * ho < xpass:
                xpass, sk = n * CH * wb * ho, (sk2, nq)
    s2 = r2 * (xpass + ob * (CH + EH) * BOX)
    return s1 + s2, s1x <= s1y, patch, sk


def _block_bits(ho, nq, wb, a2x, t2x):
    """SK2 bits: bit 4·j + q set where output half j (``ho`` outputs) reads window block q (``wb`` samples)."""
    sk2 = 0
    for j in range(2):
        lo, hi = j * ho * a2x, (j * ho + ho - 1) * a2x + t2x - 1
        for q in range(nq):
            if q * wb <= hi and (q + 1) * wb - 1 >= lo:
                sk2 |= 1 << (4 * j + q)
    return sk2


def _stream_chunks(n_blocks, ch, c2y, row_lo, row_hi):
    """Chunks a strip computes: c in [0, n_blocks] whose rows [c·ch + c2y, + ch) meet [row_lo, row_hi)."""
    return sum(1 for c in range(n_blocks + 1) if c * ch + c2y < row_hi and c * ch + c2y + ch > row_lo)


@functools.lru_cache(maxsize=512)
def _choose_stream(ay, ax, r1, r2, out_h, out_w, c2y, row_lo, row_hi, max_dim, max_chunk=_MAX_CHUNK):
    """The cheapest streaming plan (cost, (ob, obv), bx, BOX, CH, BTX, EH, BMY, BMX, xf1, patch, sk2) by the cost
    model of ``_choose_tiles`` (GPU), or None where the geometry does not fit one: output row blocks of OBV rows
    (the dots' OB = max(16, OBV)) need chunks of CH = OBV·A2Y rows (a power of two, 16 or more) and reach at most
    CH rows into the next chunk."""
    a1y, t1y, a2y, t2y = ay
    best = None
    step_x = 4 // math.gcd(4, ax[2])
    for ch in (16, 32, 64, 128):
        if ch % a2y or ch > max_dim:
            continue
        obv = ch // a2y
        ob = max(16, obv)
        e = t2y - a2y
        if e > ch or obv > 32:
            continue
        eh = 0 if e <= 0 else (ch // 2 if e <= ch // 2 and ch // 2 >= 16 else ch)
        bmy = _pow2(-(-(ch + t1y - 1) // a1y))
        n_blocks = -(-out_h // obv)
        nch = _stream_chunks(n_blocks, ch, c2y, row_lo, row_hi)
        top = min(-(-out_w // step_x) * step_x, 256)
        for bx in range(step_x, top + 1, step_x):
            BOX, BTX, BMX = _axis_blocks(bx, *ax)
            if max(BTX, BMX, BOX) > max_dim or ch * BTX > max_chunk:
                break
            macs, xf1, patch, sk = _stream_chunk_macs(r1, r2, ob, BOX, ch, BTX, eh, bmy, BMX, ay, ax)
            cost = (-(-out_w // bx)) * (nch * (macs + _WINDOW_COST * ch * BTX) + _GPU_PROGRAM_COST)
            if best is None or cost < best[0]:
                best = (cost, (ob, obv), bx, BOX, ch, BTX, eh, bmy, BMX, xf1, patch, sk)
    return best

class _Plan:
    """Everything both directions of the op need: sizes, per-axis stage parameters and filter factors."""

    def __init__(self, x, fu, fd, up, down, padding, gain, slope, clamp, flip_filter, max_dim, gpu_tiles=False):
        n, c, in_h, in_w = x.shape
        px0, px1, py0, py1 = padding
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        tu_y, tu_x = (1, 1) if fu is None else ((fu.shape[0],) * 2 if fu.ndim == 1 else tuple(fu.shape))
        td_y, td_x = (1, 1) if fd is None else ((fd.shape[0],) * 2 if fd.ndim == 1 else tuple(fd.shape))
        out_h = (in_h * up + py0 + py1 - (tu_y - 1) - (td_y - 1) + (down - 1)) // down
        out_w = (in_w * up + px0 + px1 - (tu_x - 1) - (td_x - 1) + (down - 1)) // down
        if out_h < 1 or out_w < 1:
            raise ValueError(f"filtered_lrelu: padding {list(padding)} leaves no output for input {in_h}x{in_w} "
                             f"(up={up}, down={down}, taps fu={tu_y}x{tu_x}, fd={td_y}x{td_x})")
        self.n, self.c, self.in_h, self.in_w, self.out_h, self.out_w = n, c, in_h, in_w, out_h, out_w
        # Region of the upsampled signal that influences the output (code tensor extent, docs/algorithm.md "Op: filtered_lrelu").
        self.code_h = (out_h - 1) * down + td_y
        self.code_w = (out_w - 1) * down + td_x
        self.code_stride = -(-self.code_w // 16) * 4
        self.gain, self.slope, self.clamp = float(gain), float(slope), clamp
        # Largest register block side: big blocks under the interpreter (per-op overhead dominates).
        self.max_dim = max_dim or 128
        # Test hook: under the interpreter, tile exactly as on a GPU (window cap, small blocks, patch shapes).
        self.tile_interpret = _interpreting() and not gpu_tiles
        # Test hook: gpu_tiles='tiles' keeps to _flrelu_kernel's tiles (no streaming plans), so both kernels' GPU
        # plans can be checked whichever the cost model prefers at a test's size.
        # gpu_tiles='stream': the streaming kernel wherever the geometry allows it, whatever the cost model says.
        self.stream = gpu_tiles != "tiles"
        self.force_stream = gpu_tiles == "stream"
        self.cdtype = cdtype
        # Tensor cores for the banded dots: fp16 inputs as fp16 operands with split (exact) filters; float32 and
        # bfloat16 with data and filters both split into two fp16 parts; float64 (gradcheck) on CUDA cores.
        self.dot = {torch.float64: _DOT_IEEE, torch.float16: _DOT_FP16}.get(x.dtype, _DOT_FP16X3)
        uy, ux = _factor_filter(fu, flip_filter, x.device, cdtype)
        dy, dx = _factor_filter(fd, flip_filter, x.device, cdtype)
        # Stage gain up² of the upsampling FIR (docs/algorithm.md "Op: filtered_lrelu" step 2), folded into the y factors of stage 1.
        scale = float(up * up)
        # Forward direction: stage 1 = upsample by `up` with fu (offset px0), stage 2 = fd + decimate.
        self.fwd = dict(h1y=uy * scale, h1x=ux, h2y=dy, h2x=dx,
                        a1=(up, up), c1=(py0, px0), t1=(tu_y, tu_x),
                        a2=(down, down), c2=(0, 0), t2=(td_y, td_x))
        # Adjoint: the transposed stages — filters reversed (the flip toggle), factors swapped (docs/algorithm.md "Op: filtered_lrelu").
        self.bwd = dict(h1y=dy.flip(-1).contiguous(), h1x=dx.flip(-1).contiguous(),
                        h2y=(uy * scale).flip(-1).contiguous(), h2x=ux.flip(-1).contiguous(),
                        a1=(down, down), c1=(td_y - 1, td_x - 1), t1=(td_y, td_x),
                        a2=(up, up), c2=(py0 - tu_y + 1, px0 - tu_x + 1), t2=(tu_y, tu_x))

    def launch(self, inp, direction, mode, bias=None, codes=None, out=None):
        """Run the kernel. direction 'fwd': inp [N,C,in_h,in_w] -> [N,C,out_h,out_w]; 'bwd': the reverse."""
        p = self.fwd if direction == "fwd" else self.bwd
        if direction == "fwd":
            (ih, iw), (oh, ow) = (self.in_h, self.in_w), (self.out_h, self.out_w)
        else:
            (ih, iw), (oh, ow) = (self.out_h, self.out_w), (self.in_h, self.in_w)
        inp = inp.contiguous()
        if out is None:
            out = torch.empty(self.n, self.c, oh, ow, dtype=inp.dtype, device=inp.device)
        r1, r2 = p["h1y"].shape[0], p["h2y"].shape[0]
        ay = (p["a1"][0], p["t1"][0], p["a2"][0], p["t2"][0])
        ax = (p["a1"][1], p["t1"][1], p["a2"][1], p["t2"][1])
        cost, by, bx, BOY, BOX, BTY, BTX, BMY, BMX, xf1, xf2, patch, sk2 = _choose_tiles(
            ay, ax, r1, r2, oh, ow, self.max_dim, self.tile_interpret, _MAX_WINDOW)
        # Streaming for separable stages only: with R's rank > 1 terms the stream variants spilled 16-208 bytes at
        # 4 warps with Triton 3.6 (255 registers) and more at 16 warps (128 registers), on 3.9 too.
        if not self.tile_interpret and self.stream and (r1 * r2 == 1 or self.force_stream):
            # Rows of the upsampled signal that reach the output (the codes' region bounds the backward's).
            row_lo = max(0, p["c2"][0])
            row_hi = min(self.code_h, (oh - 1) * p["a2"][0] + p["c2"][0] + p["t2"][0])
            st = _choose_stream(ay, ax, r1, r2, oh, ow, p["c2"][0], row_lo, row_hi, self.max_dim)
            if st is not None and (st[0] < _STREAM_MARGIN * cost or self.force_stream):
                return self._launch_stream(inp, out, p, mode, bias, codes, ih, iw, oh, ow, r1, r2, st, row_lo,
                                           row_hi)
        dummy = out
        grid = (self.n * self.c, -(-oh // by), -(-ow // bx))
        launch_kernel(_flrelu_kernel, grid,
            inp, out, bias if bias is not None else dummy, codes if codes is not None else dummy,
            p["h1y"], p["h1x"], p["h2y"], p["h2x"],
            self.c, ih, iw, oh, ow,
            self.code_h, self.code_w, self.code_stride,
            p["c1"][0], p["c1"][1], p["c2"][0], p["c2"][1],
            by, bx,
            self.gain, self.slope, float(self.clamp) if self.clamp is not None else 0.0,
            A1Y=p["a1"][0], A1X=p["a1"][1], T1Y=p["t1"][0], T1X=p["t1"][1], R1=r1,
            A2Y=p["a2"][0], A2X=p["a2"][1], T2Y=p["t2"][0], T2X=p["t2"][1], R2=r2,
            BOY=BOY, BOX=BOX, BTY=BTY, BTX=BTX, BMY=BMY, BMX=BMX,
            PATCH1=patch is not None, PIY=patch[0] if patch else 16, PIX=patch[1] if patch else 16,
            POY=patch[2] if patch else 16, POX=patch[3] if patch else 16,
            SK2=sk2[0], NQ2=sk2[1],
            HAS_BIAS=bias is not None, HAS_CLAMP=self.clamp is not None, MODE=mode, FLOOR_BIAS=_FLOOR_BIAS,
            DOT=self.dot, XF1=xf1, XF2=xf2,
            num_warps=4 if BTY * BTX <= _SMALL_WINDOW else 16,
        )
        return out

    def _launch_stream(self, inp, out, p, mode, bias, codes, ih, iw, oh, ow, r1, r2, st, row_lo, row_hi):
        _, (ob, obv), bx, BOX, CH, BTX, EH, BMY, BMX, xf1, patch, sk2 = st
        dummy = out
        grid = (self.n * self.c, -(-ow // bx))
        launch_kernel(_flrelu_stream_kernel, grid,
            inp, out, bias if bias is not None else dummy, codes if codes is not None else dummy,
            p["h1y"], p["h1x"], p["h2y"], p["h2x"],
            self.c, ih, iw, oh, ow,
            self.code_h, self.code_w, self.code_stride,
            p["c1"][0], p["c1"][1], p["c2"][0], p["c2"][1],
            bx, -(-oh // obv), row_lo, row_hi,
            self.gain, self.slope, float(self.clamp) if self.clamp is not None else 0.0,
            A1Y=p["a1"][0], A1X=p["a1"][1], T1Y=p["t1"][0], T1X=p["t1"][1], R1=r1,
            A2Y=p["a2"][0], A2X=p["a2"][1], T2Y=p["t2"][0], T2X=p["t2"][1], R2=r2,
            OB=ob, OBV=obv, BOX=BOX, CH=CH, BTX=BTX, EH=EH, BMY=BMY, BMX=BMX,
            PATCH1=patch is not None, PIY=patch[0] if patch else 16, PIX=patch[1] if patch else 16,
            POY=patch[2] if patch else 16, POX=patch[3] if patch else 16,
            SK2=sk2[0], NQ2=sk2[1],
            HAS_BIAS=bias is not None, HAS_CLAMP=self.clamp is not None, MODE=mode, FLOOR_BIAS=_FLOOR_BIAS,
            DOT=self.dot, XF1=xf1,
            num_warps=4 if CH * BTX <= _SMALL_WINDOW else 16,
        )
        return out

    def new_codes(self, device):
        return torch.empty(self.n, self.c, self.code_h, self.code_stride, dtype=torch.uint8, device=device)


class _CodedLinear(torch.autograd.Function):
    """The op with frozen codes, a linear map; direction 'bwd' is dL/dx given dL/dy, 'fwd' its adjoint."""

    @staticmethod
    def forward(ctx, inp, codes, plan, direction):
        ctx.save_for_backward(codes)
        ctx.plan, ctx.direction = plan, direction
        return plan.launch(inp, direction, _MODE_CODED, codes=codes)

    @staticmethod
    def backward(ctx, grad):
        (codes,) = ctx.saved_tensors
        other = "fwd" if ctx.direction == "bwd" else "bwd"
        return _CodedLinear.apply(grad, codes, ctx.plan, other), None, None, None


class _FilteredLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, plan, want_codes):
        codes = plan.new_codes(x.device) if want_codes else None
        y = plan.launch(x, "fwd", _MODE_ACT_CODES if want_codes else _MODE_ACT, bias=b, codes=codes)
        ctx.plan = plan
        if want_codes:
            ctx.save_for_backward(codes)
        return y

    @staticmethod
    def backward(ctx, dy):
        (codes,) = ctx.saved_tensors
        dx = _CodedLinear.apply(dy, codes, ctx.plan, "bwd")
        db = dx.sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None


def filtered_lrelu_triton(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, *, _max_dim=None,
                          _gpu_tiles=False):
    """Fused filtered leaky ReLU (docs/algorithm.md "Op: filtered_lrelu") on a Triton kernel.

    Args:
        x: [N, C, H, W] float16 / bfloat16 / float32 (float64 for gradcheck) on CUDA, or CPU under
            TRITON_INTERPRET=1.
        fu, fd: float32 filters: None (identity), [taps] (separable) or [fh, fw]; never differentiated.
        b: [C] bias or None.
        up, down: integer factors >= 1.
        padding: [x0, x1, y0, y1] ints w.r.t. the upsampled image; negative crops.
        gain, slope: floats (gain > 0); clamp: float or None.
        flip_filter: False = true convolution, True = correlation.
        _max_dim: test hook, the largest register block side (forces many small tiles).
        _gpu_tiles: test hook, under the interpreter tile as on a GPU (the plans the GPU runs, checked on CPU);
            ``'tiles'``: as on a GPU but never the streaming kernel; ``'stream'``: the streaming kernel wherever
            the geometry allows it.
    Returns:
        [N, C, (H·up + y0 + y1 − fu_h − fd_h + 1 + down) // down, (same for W)] tensor, x's dtype,
        differentiable to any order w.r.t. x and b.
    """
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu: x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if not gain > 0:
        raise ValueError(f"filtered_lrelu: the Triton path needs gain > 0, got {gain}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"filtered_lrelu: b must be [{x.shape[1]}], got shape {tuple(b.shape)}")
    plan = _Plan(x, fu, fd, int(up), int(down), [int(p) for p in padding], gain, slope, clamp, bool(flip_filter),
                 _max_dim, _gpu_tiles)
    want_codes = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    if b is not None:
        b = b.contiguous()
    return _FilteredLReLU.apply(x, b, plan, want_codes)


def launch_cost(p: dict, programs: int) -> dict:
    """What one launch of ``_flrelu_kernel`` executes, from its own tile plan (``p``: the launch's arguments).

    ``macs``: multiply-adds by unit (every ``tl.dot`` counted at its full padded shape, times the programs);
    ``dram_bytes``: the unique footprint (input, output, codes once: neighbouring tiles' halo re-reads hit L2);
    ``tile_bytes``: what the programs load and store including halos.
    """
    esz_in = p["in_ptr"].element_size()
    esz_out = p["out_ptr"].element_size()
    f64 = p["h1y_ptr"].dtype == torch.float64
    dot = p.get("DOT", _DOT_IEEE)
    # (unit, dots per multiply-add): fp16 data x (hi + lo) filter = 2; (hi + lo) x (hi + lo) without lo·lo = 3.
    unit, passes = {_DOT_IEEE: ("cuda_fp64" if f64 else "cuda_fp32", 1), _DOT_FP16: ("tc_fp16", 2),
                    _DOT_FP16X3: ("tc_fp16", 3)}[dot]
    r1, r2 = p["R1"], p["R2"]
    if "CH" in p:  # _flrelu_stream_kernel: chunks per program x one chunk's dots
        return _stream_launch_cost(p, programs, esz_in, esz_out, unit, passes)
    BOY, BOX, BTY, BTX, BMY, BMX = (p[k] for k in ("BOY", "BOX", "BTY", "BTX", "BMY", "BMX"))
    if "XF1" in p:
        s1x = BMY * BMX * BTX + BTY * BMY * BTX
        s1y = BTY * BMY * BMX + BTY * BMX * BTX
        s2x = BTY * BTX * BOX + BOY * BTY * BOX
        s2y = BOY * BTY * BTX + BOY * BTX * BOX
        s1 = s1x if p["XF1"] else s1y
        if p.get("PATCH1"):
            PIY, PIX, POY, POX = (p[k] for k in ("PIY", "PIX", "POY", "POX"))
            s1 = (BTY // POY) * (BTX // POX) * PIY * POX * (PIX + POY)
        s2 = s2x if p["XF2"] else s2y
        if p.get("SK2"):
            n, wb = bin(p["SK2"]).count("1"), BTX // p["NQ2"]
            s2 = (n * BTY * wb * (BOX // 2) + BOY * BTY * BOX if p["XF2"]
                  else BOY * BTY * BTX + n * BOY * wb * (BOX // 2))
        per_prog = passes * (r1 * s1 + r2 * s2)
    else:
        per_prog = r1 * (BMY * BMX * BTX + BTY * BMY * BTX) + r2 * (BTY * BTX * BOX + BOY * BTY * BOX)
    inp, out = p["in_ptr"], p["out_ptr"]
    code_bytes = 0
    if p["MODE"] != _MODE_ACT:
        code_bytes = out.shape[0] * out.shape[1] * p["code_h"] * p["code_stride"]
    dram = inp.numel() * esz_in + out.numel() * esz_out + code_bytes
    in_tile = BMY * BMX
    if p.get("PATCH1"):
        in_tile = (BTY // p["POY"]) * p["PIY"] * (BTX // p["POX"]) * p["PIX"]
    tile = programs * (in_tile * esz_in + (BTY * BTX // 4 if p["MODE"] != _MODE_ACT else 0)) \
        + out.numel() * esz_out
    return {"macs": {unit: programs * per_prog}, "dram_bytes": dram, "tile_bytes": tile}


def floor_bytes(p: dict) -> int:
    """The memory floor of one launch: its input and output once, plus the 2-bit codes it writes or reads."""
    inp, out = p["in_ptr"], p["out_ptr"]
    n = inp.numel() * inp.element_size() + out.numel() * out.element_size()
    if p["MODE"] != _MODE_ACT:
        n += out.shape[0] * out.shape[1] * p["code_h"] * -(-p["code_w"] // 4)
    return n


def _stream_launch_cost(p, programs, esz_in, esz_out, unit, passes):
    """``launch_cost`` of ``_flrelu_stream_kernel``: every program computes the same chunks (``_stream_chunks``)."""
    r1, r2 = p["R1"], p["R2"]
    OB, BOX, CH, BTX, EH, BMY, BMX = (p[k] for k in ("OB", "BOX", "CH", "BTX", "EH", "BMY", "BMX"))
    if p["PATCH1"]:
        PIY, PIX, POY, POX = (p[k] for k in ("PIY", "PIX", "POY", "POX"))
        s1 = r1 * (CH // POY) * (BTX // POX) * PIY * POX * (PIX + POY)
        in_tile = (CH // POY) * PIY * (BTX // POX) * PIX
    else:
        s1 = r1 * (BMY * BMX * BTX + CH * BMY * BTX if p["XF1"] else CH * BMY * BMX + CH * BMX * BTX)
        in_tile = BMY * BMX
    xpass = CH * BTX * BOX
    if p["SK2"]:
        xpass = bin(p["SK2"]).count("1") * CH * (BTX // p["NQ2"]) * (BOX // 2)
    per_chunk = s1 + r2 * (xpass + OB * (CH + EH) * BOX)
    nch = _stream_chunks(p["n_blocks_y"], CH, p["c2y"], p["row_lo"], p["row_hi"])
    inp, out = p["in_ptr"], p["out_ptr"]
    code_bytes = 0
    if p["MODE"] != _MODE_ACT:
        code_bytes = out.shape[0] * out.shape[1] * p["code_h"] * p["code_stride"]
    dram = inp.numel() * esz_in + out.numel() * esz_out + code_bytes
    tile = programs * nch * (in_tile * esz_in + (CH * BTX // 4 if p["MODE"] != _MODE_ACT else 0)) \
        + out.numel() * esz_out
    return {"macs": {unit: programs * nch * passes * per_chunk}, "dram_bytes": dram, "tile_bytes": tile}
