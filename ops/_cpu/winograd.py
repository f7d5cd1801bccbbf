"""3x3 convolution by Winograd's minimal filtering F(4x4, 3x3), for the CPU path (impl 'cpu') of the modulated
3x3 convolutions and the discriminator's stride-1 3x3 convolutions (where ``applies`` says so).

The modulated 3x3 convolutions are most of a CPU training step. On the CPU PyTorch runs them as direct (oneDNN)
convolutions, whose backward is about twice as slow on channels-last tensors -- the layout that the rest of the
CPU synthesis path uses (ops/_cpu/filtered_lrelu.py). F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input tile
with 36 multiplies per input/output channel pair instead of 144 (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016): the input tiles and the weights are transformed by small constant
matrices, multiplied as 36 independent [tiles, C] x [C, O] matrix products, and transformed back. The backward
pass uses the same decomposition: the input gradient is a Winograd convolution of the output gradient with the
flipped, transposed weights; the weight gradient is the product of the saved transformed input tiles and the
transformed output gradient, transformed back through the weight transform.

Same values as ``F.conv2d`` up to float rounding (relative error about 1e-5 of the largest output in float32,
a few times that of a direct convolution; float64 agrees to ~1e-14). Works for any input memory format, is
fastest on channels-last, and returns a channels-last result (a cropped view when the output size is not a
multiple of 4). Differentiable to any order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Transform matrices for F(4, 3) with interpolation points 0, +-1, +-2, infinity (correlation form, as
# torch.nn.functional.conv2d): y = A^T [(G g G^T) * (B^T d B)] A for a 6x6 input tile d and 3x3 filter g.
_BT = [[4, 0, -5, 0, 1, 0],
       [0, -4, -4, 1, 1, 0],
       [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0],
       [0, 1, -1, 2, -2, 0],
       [0, 1, 1, 4, 4, 0],
       [0, 1, -1, 8, -8, 1]]

# Below this many 4x4 output tiles per call (batch x tiles per image) the weight transform, proportional to the
# weight's size, costs more than the matrix products save: D's 16x16 and smaller layers at batch 4 measured
# slower by Winograd than by F.conv2d on the benchmark machine; its 32x32 and 64x64 layers and all of G's faster.
MIN_TILES = 256
# Nor with fewer input or output channels than this: at 32 channels the transforms (memory-bound, proportional to
# tiles x channels) cost more than the direct convolution's arithmetic (forward + backward 0.62-0.68x of
# F.conv2d's speed at [8, 32, 36, 36] and [4, 32, 84, 84]; 1.06-1.5x at 64 channels, 1.1-2.4x at 96-256).
MIN_CHANNELS = 64
# The batched products' column count (output channels forward, and for the weight gradient) is padded with zeros
# to a multiple of this: MKL's sgemm ran 1.3-1.6x faster on [36, T, K] x [36, K, 336] than on ... x 323 (the
# odd channel counts 406, 323, 203, 161 of the benchmark generator), more than the extra columns cost.
GEMM_COLUMNS = 16

_MATRICES: dict = {}


def _matrices(dtype: torch.dtype, device: torch.device):
    """(KB [36, 36], KG [36, 9], KA [16, 36]): the 2-D transforms as Kronecker products, cached per dtype/device."""
    key = (dtype, device)
    if key not in _MATRICES:
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        _MATRICES[key] = tuple(torch.kron(m, m).to(dtype=dtype, device=device) for m in (bt, g, at))
    return _MATRICES[key]


def _tiles(h: int, w: int, pad: int) -> tuple[int, int, int, int]:
    """(out_h, out_w, tiles_y, tiles_x) of a 3x3 convolution with zero padding ``pad`` on an [h, w] input."""
    out_h, out_w = h + 2 * pad - 2, w + 2 * pad - 2
    return out_h, out_w, -(-out_h // 4), -(-out_w // 4)


def _input_transform(x: torch.Tensor, pad: int) -> torch.Tensor:
    """x [N, C, H, W] -> V [36, N * tiles, C]: the transformed, overlapping 6x6 input tiles (zero padded)."""
    n, c, h, w = x.shape
    _, _, th, tw = _tiles(h, w, pad)
    kb = _matrices(x.dtype, x.device)[0]
    xp = x.permute(0, 2, 3, 1)                                                   # [N, H, W, C]
    xp = F.pad(xp, [0, 0, pad, tw * 4 + 2 - w - pad, pad, th * 4 + 2 - h - pad])
    t = xp.unfold(1, 6, 4).unfold(2, 6, 4)                                       # [N, th, tw, C, 6, 6] (view)
    t = t.permute(4, 5, 0, 1, 2, 3).reshape(36, n * th * tw * c)                 # one gather copy
    return (kb @ t).view(36, n * th * tw, c)


def _padded(o: int) -> int:
    return -(-o // GEMM_COLUMNS) * GEMM_COLUMNS


def _weight_transform(weight: torch.Tensor, gain: float) -> torch.Tensor:
    """weight [O, C, 3, 3] -> U [36, C, Op] of the weight times ``gain`` (folded into the [36, 9] transform),
    zero columns appended up to Op = O rounded up to GEMM_COLUMNS."""
    o, c = weight.shape[:2]
    op = _padded(o)
    kg = _matrices(weight.dtype, weight.device)[1]
    if gain != 1:
        kg = kg * gain
    # [9, C*Op] first (a copy of the small weight), so that U comes out contiguous for the batched products
    w9 = weight.permute(2, 3, 1, 0)
    w9 = F.pad(w9, [0, op - o]) if op != o else w9
    return (kg @ w9.reshape(9, c * op)).view(36, c, op)


def _output_transform(m: torch.Tensor, o: int, n: int, out_h: int, out_w: int, th: int, tw: int) -> torch.Tensor:
    """M [36, N * tiles, Op] -> y [N, O, out_h, out_w] (channels-last; the first O of the Op columns)."""
    op = m.shape[2]
    ka = _matrices(m.dtype, m.device)[2]
    y = (ka @ m.reshape(36, -1)).view(4, 4, n, th, tw, op)[..., :o]
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, th * 4, tw * 4, o)               # one scatter copy
    # a cropped view (the next elementwise op writes a dense channels-last tensor anyway)
    return y[:, :out_h, :out_w].permute(0, 3, 1, 2)


def _output_grad_transform(dy: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """dy [N, O, out_h, out_w] -> dM [36, N * tiles, Op] (the adjoint of _output_transform, zero columns
    appended up to Op = O rounded up to GEMM_COLUMNS)."""
    n, o, out_h, out_w = dy.shape
    op = _padded(o)
    ka = _matrices(dy.dtype, dy.device)[2]
    g = dy.permute(0, 2, 3, 1)
    if th * 4 != out_h or tw * 4 != out_w or op != o:
        g = F.pad(g, [0, op - o, 0, tw * 4 - out_w, 0, th * 4 - out_h])
    g = g.reshape(n, th, 4, tw, 4, op).permute(2, 4, 0, 1, 3, 5).reshape(16, -1)
    return (ka.t() @ g).view(36, n * th * tw, op)


class _Conv3x3Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, pad, gain):
        n, c, h, w = x.shape
        out_h, out_w, th, tw = _tiles(h, w, pad)
        v = _input_transform(x, pad)
        m = torch.bmm(v, _weight_transform(weight, gain))
        ctx.save_for_backward(x, weight, v)
        ctx.pad, ctx.gain = pad, gain
        return _output_transform(m, weight.shape[0], n, out_h, out_w, th, tw)

    @staticmethod
    def backward(ctx, dy):
        x, weight, v = ctx.saved_tensors
        pad, gain = ctx.pad, ctx.gain
        n, c, h, w = x.shape
        o = weight.shape[0]
        _, _, th, tw = _tiles(h, w, pad)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            # The adjoint of a 3x3 correlation with padding p is one with the flipped, transposed kernel and
            # padding 2 - p, cropped back when 2 - p is negative.
            wt = weight.flip([2, 3]).transpose(0, 1)
            if pad <= 2:
                dx = conv3x3_winograd(dy, wt, 2 - pad, gain)
            else:
                dx = conv3x3_winograd(dy, wt, 0, gain)[:, :, pad - 2:pad - 2 + h, pad - 2:pad - 2 + w]
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():  # double backward: rebuild V with its graph back to x
                v = _input_transform(x, pad)
            du = torch.bmm(v.transpose(1, 2), _output_grad_transform(dy, th, tw))  # [36, C, Op]
            if du.shape[2] != o:
                du = du[:, :, :o]
            kg = _matrices(du.dtype, du.device)[1]
            if gain != 1:
                kg = kg * gain
            dw = (kg.t() @ du.reshape(36, c * o)).view(3, 3, c, o).permute(3, 2, 0, 1)
        return dx, dw, None, None


def applies(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """Whether the CPU path computes this convolution by Winograd: a CPU float32/64 input, a 3x3 kernel, at least
    MIN_CHANNELS input and output channels and at least MIN_TILES output tiles (float16 and CUDA keep F.conv2d)."""
    if not (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.ndim == 4
            and weight.shape[2:] == (3, 3) and min(weight.shape[0], weight.shape[1]) >= MIN_CHANNELS):
        return False
    _, _, th, tw = _tiles(x.shape[2], x.shape[3], padding)
    return x.shape[0] * th * tw >= MIN_TILES


def conv3x3_winograd(x: torch.Tensor, weight: torch.Tensor, padding: int, gain: float = 1.0) -> torch.Tensor:
    """``F.conv2d(x, weight * gain, padding=padding)`` for a [O, C, 3, 3] weight by Winograd F(4x4, 3x3).

    ``gain`` (a Python number: an equalised-lr weight gain) is folded into the weight transform, so the scaled
    weight is never built.

    x: [N, C, H, W] float32/float64, any memory format (channels-last avoids a transposing copy).
    Returns [N, O, H + 2p - 2, W + 2p - 2] with channels-last strides (channels innermost; a cropped view when
    a side is not a multiple of 4); differentiable to any order.
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"conv3x3_winograd: weight must be [O, C, 3, 3], got {list(weight.shape)}")
    if x.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv3x3_winograd: x must be [N, {weight.shape[1]}, H, W], got {list(x.shape)}")
    if padding < 0 or x.shape[2] + 2 * padding < 3 or x.shape[3] + 2 * padding < 3:
        raise ValueError(f"conv3x3_winograd: padding {padding} leaves no output for input {list(x.shape)}")
    return _Conv3x3Winograd.apply(x, weight.to(x.dtype), int(padding), float(gain))


__all__ = ["conv3x3_winograd", "applies"]
