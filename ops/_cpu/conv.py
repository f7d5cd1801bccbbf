"""The convolutions' CPU paths (impl 'cpu'): the modulated convolution as scale -> one shared-weight convolution
-> scale, and 3x3 convolutions by Winograd F(4x4, 3x3) where that is faster (ops/_cpu/winograd.py). Same values
as the references (ops/modulated_conv.py, ops/conv2d.py) up to float rounding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import winograd


def conv2d_cpu(x: torch.Tensor, weight: torch.Tensor, padding: int, gain: float) -> torch.Tensor:
    """``F.conv2d(x, (weight * gain).to(x.dtype), padding=padding)``; by Winograd where ``winograd.applies`` (CPU
    float32/64, 3x3, enough channels and tiles), the gain folded into its weight transform (any order of
    gradients, as R1 needs), with a channels-last result."""
    if winograd.applies(x, weight, padding):
        return winograd.conv3x3_winograd(x, weight, padding, gain=gain)
    return F.conv2d(x, (weight * gain).to(x.dtype), padding=padding)


def modulated_conv2d_cpu(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, padding: int,
                         demodulate: bool, input_gain: torch.Tensor | None) -> torch.Tensor:
    """The modulated convolution (arguments validated, ``x`` float32/float64) as scale input -> one shared-weight
    convolution -> scale output.

    PyTorch's CPU convolution is ~1.2x faster on the batch than grouped per sample, and the per-sample weights
    [N, O, I, k, k] (and their gradient) are never built. With r[o] the weight pre-normalisation and
    sum_{i,k} (r[o] w[o,i,k] s[n,i])^2 = r[o]^2 sum_i s[n,i]^2 sum_k w[o,i,k]^2, both the pre-normalisation and the
    demodulation are one [N, O] output scale, so no scaled copy of the weight is built either. 3x3 kernels
    (config T) run as Winograd F(4x4, 3x3) convolutions on the channels-last activations (~2x faster than
    F.conv2d, channels-last out)."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if demodulate:
        styles = styles * styles.square().mean().rsqrt()
    out_scale = None
    if demodulate:
        wsq = weight.square().sum(dim=[2, 3])                                           # [O, I]
        r = (wsq.sum(dim=1) * (1 / (in_ch * kh * kw))).rsqrt()                          # [O]
        out_scale = r * (styles.square() @ wsq.t() * r.square() + 1e-8).rsqrt()        # [N, O]
    if input_gain is not None:
        out_scale = input_gain.expand(n, out_ch) if out_scale is None else out_scale * input_gain
    x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
    if winograd.applies(x, weight, padding):
        x = winograd.conv3x3_winograd(x, weight, padding)
    else:
        x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    return x if out_scale is None else x * out_scale.to(x.dtype).reshape(n, out_ch, 1, 1)
