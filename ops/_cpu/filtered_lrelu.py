"""filtered_lrelu's CPU path (impl 'cpu', docs/ops.md "filtered_lrelu in the phase domain (CPU)").

Where ``phase_domain_applies`` (every StyleGAN3-T layer but ToRGB; R's critically sampled ones) the op runs phase
by phase: nothing at the upsampled rate but the nonlinearity, separable 1-D passes in channels-last memory, and
custom autograd Functions that save little and keep the gradients in channels-last memory. Elsewhere it builds the
upsampled intermediate with the polyphase upfirdn2d (ops/_cpu/upfirdn2d.py) and filters it back down, with the
activation as one in-place Function. Same values as the reference (ops/filtered_lrelu.py) up to float rounding.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..bias_act import bias_act_ref
from .upfirdn2d import upfirdn2d_cpu


class _LreluGainClamp(torch.autograd.Function):
    """``clamp(leaky_relu(x, slope) * gain, -clamp, clamp)`` (bias_act_ref's values and gradients) in place on
    one buffer, saving only its output and a boolean "not clamped" mask: three full-size passes and two saved
    tensors fewer than the chain of autograd ops at the upsampled rate. Its backward is built from
    differentiable ops of the incoming gradient (the factor is piecewise constant in x), so every order of
    gradients works. Needs gain > 0 and slope >= 0, where sign(y) = sign(x)."""

    @staticmethod
    def forward(ctx, x, slope: float, gain: float, clamp):
        y = torch.nn.functional.leaky_relu(x, slope)
        if gain != 1:
            y.mul_(gain)
        inside = None
        if clamp is not None:
            inside = y.abs() <= clamp  # clamp's gradient passes where -clamp <= value <= clamp
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y, inside)
        ctx.args = (slope, gain)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, inside = ctx.saved_tensors
        slope, gain = ctx.args
        # leaky_relu's derivative is 1 where x > 0 (exactly where y > 0), else slope
        dx = torch.where(y.detach() > 0, dy * gain, dy * (gain * slope))
        if inside is not None:
            dx = torch.where(inside, dx, torch.zeros((), dtype=dx.dtype, device=dx.device))
        return dx, None, None, None


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _axis_plan(n: int, up: int, down: int, hu: list, hd: list, p0: int, p1: int):
    """The phase-domain bookkeeping of filtered_lrelu along one axis (docs/algorithm.md "Op: filtered_lrelu" steps 2-4), ``down`` dividing ``up``.

    ``hu``, ``hd``: the up/down filter taps in true-convolution orientation with their gains folded in; the
    input ``x`` has ``n`` samples (zero outside). The upsampled signal ``z`` (length ``Lz``) is split into its ``up``
    phases ``Z_r[j] = z[up*j + r]``: each is an ordinary convolution of ``x`` with every ``up``-th tap of ``hu``
    (the inserted zeros are never touched). The nonlinearity acts on each phase alone. The filtered, decimated
    output ``out[i] = sum_u hd[Td-1-u] a[down*i + u]`` splits into ``M = up/down`` phases ``out[M*i + ib]``, each a
    sum over the ``Z_r`` of ordinary correlations (no stride): nothing runs at the upsampled rate but the
    nonlinearity, and nothing is interleaved but the (input-rate) output when ``M > 1``.

    Returns ``(ups, outs, out_len)``:
      ``ups[r] = (g, s, lo, hi)``: ``Z_r[j] = sum_t g[t] x[j + t + s]``, needed for ``j`` in ``[lo, hi)``;
      ``outs[ib] = (len_ib, [(r, g, s), ...])``: ``out[M*i + ib] = sum over terms of sum_t g[t] A_r[i + t + s]``.
    """
    tu, td = len(hu), len(hd)
    out_len = (n * up + p0 + p1 - tu + 1 - td) // down + 1
    m = up // down
    need: dict = {}
    outs = []
    for ib in range(m):
        len_ib = _ceil_div(out_len - ib, m)
        terms = []
        if len_ib > 0:
            for r in range(up):
                vmin = _ceil_div(down * ib - r, up)
                vmax = (td - 1 + down * ib - r) // up
                if vmax < vmin:
                    continue
                g = [hd[td - 1 - (up * v + r - down * ib)] for v in range(vmin, vmax + 1)]
                terms.append((r, g, vmin))
                lo, hi = vmin, len_ib + vmin + len(g) - 1
                a, b = need.get(r, (lo, hi))
                need[r] = (min(a, lo), max(b, hi))
        outs.append((len_ib, terms))
    m0 = tu - 1 - p0  # z[m] = sum_k x[k] hu[m + m0 - up*k]
    ups = {}
    for r, (lo, hi) in sorted(need.items()):
        e, q = (r + m0) % up, (r + m0) // up
        he = hu[e::up]
        if he:  # a filter with fewer than `up` taps leaves some phases identically zero: lrelu(0) = 0 adds nothing
            ups[r] = (he[::-1], q - len(he) + 1, lo, hi)
    outs = [(len_ib, [t for t in terms if t[0] in ups]) for len_ib, terms in outs]
    return ups, outs, out_len


@functools.lru_cache(maxsize=512)
def _depthwise_weight(taps: tuple, c: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The [C, 1, k, 1] / [C, 1, 1, k] weight of a depthwise 1-D correlation (fixed taps: built once per layer)."""
    k = len(taps)
    t = torch.tensor(taps, dtype=dtype, device=device)
    return (t.view(1, 1, k, 1) if dim == 2 else t.view(1, 1, 1, k)).repeat(c, 1, 1, 1)


def _depthwise(x: torch.Tensor, taps: tuple, dim: int, pad: int) -> torch.Tensor:
    w = _depthwise_weight(taps, x.shape[1], dim, x.dtype, x.device)
    return F.conv2d(x, w, padding=(pad, 0) if dim == 2 else (0, pad), groups=x.shape[1])


class _Correlate(torch.autograd.Function):
    """Depthwise correlation of every channel with the fixed 1-D ``taps`` along ``dim`` (2 = y, 3 = x), symmetric
    zero padding ``pad``. Its gradient is the adjoint correlation (flipped taps, padding ``k - 1 - pad``) through
    this same Function, so nothing is saved for the backward (autograd's convolution node would keep the input)
    and every order of gradients works."""

    @staticmethod
    def forward(ctx, x, taps: tuple, dim: int, pad: int):
        ctx.args = (taps, dim, pad)
        return _depthwise(x, taps, dim, pad)

    @staticmethod
    def backward(ctx, dy):
        taps, dim, pad = ctx.args
        k = len(taps)
        adj = k - 1 - pad
        if adj < 0:  # the forward padded more than the filter reaches: those outputs saw only zeros
            dy = _Narrow.apply(dy, dim, -adj, dy.shape[dim] + 2 * adj)
            adj = 0
        return _Correlate.apply(dy, taps[::-1], dim, adj), None, None, None


def _correlate(x: torch.Tensor, taps: list, dim: int, pad: int) -> torch.Tensor:
    """Depthwise correlation of every channel with the 1-D ``taps`` along ``dim`` (2 = y, 3 = x), symmetric zero
    padding ``pad`` along that axis."""
    return _Correlate.apply(x, tuple(taps), dim, pad)


def _cover_pad(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Symmetric padding for which ``sum_t g[t] x[j + t + s]`` (``x``: ``n`` samples from logical 0, ``g``: ``k``
    taps) comes out for every ``j`` in ``[lo, hi)``; the output's logical start is then ``-s - pad``."""
    return max(0, -s - lo, hi - 1 + s - n + k)


class _Narrow(torch.autograd.Function):
    """``x.narrow(dim, start, length)`` whose gradient is a zero pad in the gradient's own memory format (autograd's
    slice backward allocates a contiguous tensor: a slow transposing copy for channels-last gradients)."""

    @staticmethod
    def forward(ctx, x, dim: int, start: int, length: int):
        ctx.args = (dim, start, x.shape[dim] - start - length)
        return x.narrow(dim, start, length)

    @staticmethod
    def backward(ctx, dy):
        dim, before, after = ctx.args
        return F.pad(dy, [0, 0] * (dy.ndim - 1 - dim) + [before, after]), None, None, None


def _crop(t: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    return t if start == 0 and t.shape[dim] == length else _Narrow.apply(t, dim, start, length)


class _LreluClamp(torch.autograd.Function):
    """``clamp(leaky_relu(x, slope), -clamp, clamp)``, saving only its output. The gradient is zero where the output
    sits at the clamp (the CUDA convention of docs/algorithm.md "Op: bias_act"; torch's clamp would pass it at exactly +-clamp), else
    the leaky ReLU's; built from differentiable aten ops, so every order works. Needs slope >= 0."""

    @staticmethod
    def forward(ctx, x, slope: float, clamp):
        y = F.leaky_relu(x, slope)
        if clamp is not None:
            # Where nothing reaches the clamp (the usual case: StyleGAN's conv_clamp 256 guards against fp16
            # overflow) the backward skips the clamp's mask pass. aminmax on the flat memory of the dense
            # channels-last tensor: on the 4-D strides it makes a contiguous copy first (25x slower).
            flat = y.permute(0, 2, 3, 1).reshape(-1) if y.is_contiguous(memory_format=torch.channels_last) \
                else y.reshape(-1)
            inside = flat.numel() == 0
            if not inside:
                lo, hi = torch.aminmax(flat)
                inside = -clamp < lo.item() and hi.item() < clamp
            if inside:
                clamp = None
            else:
                y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.args = (slope, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        slope, clamp = ctx.args
        dx = torch.ops.aten.leaky_relu_backward(dy, y, slope, True)
        if clamp is not None:  # (None also where the forward found every value strictly inside the clamp)
            dx = torch.ops.aten.hardtanh_backward(dx, y, -clamp, clamp)
        return dx, None, None


def phase_domain_applies(x: torch.Tensor, fu, fd, up: int, down: int, gain: float, slope: float) -> bool:
    """Whether filtered_lrelu_cpu takes the phase-domain path for these arguments: the layers whose upsampling
    factor (> 1) is a multiple of the downsampling factor and whose filters are separable (every StyleGAN3-T layer
    but ToRGB; R's critically sampled ones), on a CPU tensor."""
    return (x.device.type == "cpu" and up > 1 and up % down == 0 and gain > 0 and slope >= 0
            and (fu is None or fu.ndim == 1) and (fd is None or fd.ndim == 1))


def _filtered_lrelu_phases(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """filtered_lrelu (docs/algorithm.md "Op: filtered_lrelu") computed phase by phase (see _axis_plan), separable filters, channels-last.

    The activation gain is folded into the last filter pass (``clamp(g*lrelu(z), c) = g*clamp(lrelu(z), c/g)``
    for ``g > 0``), the up-filter gain ``up**2`` into the up taps (``up`` per axis). Same values as the definition
    up to float rounding; autograd differentiates it (any order)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    cl = torch.channels_last
    x = x.contiguous(memory_format=cl)
    px0, px1, py0, py1 = padding

    def taps(f, g):
        if f is None:
            return [float(g)]
        t = f.double().flip(0) if flip_filter else f.double()   # true convolution orientation
        return (t * g).tolist()

    hu = taps(fu, up)
    ups_x, outs_x, out_w = _axis_plan(x.shape[3], up, down, hu, taps(fd, gain), px0, px1)
    ups_y, outs_y, out_h = _axis_plan(x.shape[2], up, down, hu, taps(fd, 1.0), py0, py1)
    act_clamp = None if clamp is None else clamp / gain

    # Up along x, then along y, phase by phase; the nonlinearity on each phase. Offsets: logical = index + off.
    act = {}
    for rx, (gx, sx, lox, hix) in ups_x.items():
        pad_x = _cover_pad(x.shape[3], len(gx), sx, lox, hix)
        bx = _correlate(x, gx, 3, pad_x)
        for ry, (gy, sy, loy, hiy) in ups_y.items():
            pad_y = _cover_pad(x.shape[2], len(gy), sy, loy, hiy)
            z = _correlate(bx, gy, 2, pad_y)
            act[ry, rx] = (_LreluClamp.apply(z, slope, act_clamp), -sy - pad_y, -sx - pad_x)

    # Down along y, then along x, output phase by output phase (valid correlations, cropped to the output).
    rows = {}
    for rx in ups_x:
        for iby, (len_y, terms) in enumerate(outs_y):
            acc = None
            for ry, g, s in terms:
                a, off_y, off_x = act[ry, rx]
                t = _crop(_correlate(a, g, 2, 0), 2, s - off_y, len_y)
                acc = t if acc is None else acc + t
            if acc is not None:  # (None: every contributing phase is zero)
                rows[rx, iby] = (acc, off_x)
    m = up // down
    y = None if m == 1 else torch.empty([x.shape[0], x.shape[1], out_h, out_w], dtype=x.dtype, device=x.device,
                                        memory_format=cl)
    for iby, (len_y, _) in enumerate(outs_y):
        for ibx, (len_x, terms) in enumerate(outs_x):
            acc = None
            for rx, g, s in terms:
                if (rx, iby) not in rows:
                    continue
                r, off_x = rows[rx, iby]
                t = _crop(_correlate(r, g, 3, 0), 3, s - off_x, len_x)
                acc = t if acc is None else acc + t
            if acc is None:  # every contributing phase is zero
                acc = x.new_zeros([x.shape[0], x.shape[1], len_y, len_x]) * x.sum()
            if m == 1:
                return acc
            y[:, :, iby::m, ibx::m] = acc
    return y


def filtered_lrelu_cpu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None,
                       b: torch.Tensor | None, up: int, down: int, padding: list[int], gain: float,
                       slope: float, clamp: float | None, flip_filter: bool) -> torch.Tensor:
    """The CPU path of docs/algorithm.md "Op: filtered_lrelu" (arguments already validated); any order of gradients.

    On CPU the work runs channels-last (PyTorch's CPU depthwise convolutions are several times faster on it,
    and a transposing copy costs more than most of the filtering) and the result is channels-last too. Where
    phase_domain_applies, the phase-domain form computes it; otherwise the upsampled intermediate is built by
    the polyphase upfirdn2d and filtered back down."""
    if phase_domain_applies(x, fu, fd, up, down, gain, slope):
        return _filtered_lrelu_phases(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    cpu = x.device.type == "cpu"
    if cpu:
        x = x.contiguous(memory_format=torch.channels_last)
    x = upfirdn2d_cpu(x, fu, up, 1, padding, flip_filter, float(up * up))
    if gain > 0 and slope >= 0:
        x = _LreluGainClamp.apply(x, slope, gain, clamp)
    else:
        x = bias_act_ref(x, None, 1, "lrelu", slope, gain, clamp)
    return upfirdn2d_cpu(x, fd, 1, down, [0, 0, 0, 0], flip_filter, 1.0)
