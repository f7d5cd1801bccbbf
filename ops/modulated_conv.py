"""The modulated convolution of StyleGAN's synthesis layers (docs/algorithm.md "Modulated convolution").

The reference here is the definition as written: modulate the weight per sample by the styles, demodulate, and
run one grouped convolution with ``groups = N``. It is also the GPU path (cuDNN runs it; there is no Triton kernel
of ours) and the path for float16 anywhere. The CPU path (ops/_cpu/conv.py) computes the same values as scale ->
one shared-weight convolution (Winograd F(4x4, 3x3) for 3x3 kernels) -> scale.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._cpu.conv import modulated_conv2d_cpu
from ._common import check_conv_args
from ._dispatch import select_impl


def modulated_conv2d_ref(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, padding: int,
                         demodulate: bool, input_gain: Optional[torch.Tensor]) -> torch.Tensor:
    """The reference (arguments validated): docs/algorithm.md "Modulated convolution" steps 1-5."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if demodulate:
        # 1. Pre-normalisation for fp16 safety; cancelled by demodulation except through the epsilon.
        styles = styles * styles.square().mean().rsqrt()
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
    w = weight.unsqueeze(0) * styles.unsqueeze(1).unsqueeze(3).unsqueeze(4)       # 2. [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()                    # 3. [N, O]
        w = w * dcoefs.unsqueeze(2).unsqueeze(3).unsqueeze(4)
    if input_gain is not None:
        w = w * input_gain                                                          # 4.
    x = x.reshape(1, n * in_ch, *x.shape[2:])                                       # 5. one grouped convolution
    w = w.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype)
    x = torch.nn.functional.conv2d(x, w, padding=padding, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, padding: int = 0,
                     demodulate: bool = True, input_gain: Optional[torch.Tensor] = None,
                     impl: str = "auto") -> torch.Tensor:
    """Per-sample modulated convolution (docs/algorithm.md "Modulated convolution").

    Args:
        x: ``[N, I, H, W]`` float16/float32/float64.
        weight: ``[O, I, k, k]`` float32.
        styles: ``[N, I]`` float32.
        padding: zero padding on every side (the synthesis layers use ``k - 1``, "full").
        demodulate: normalise each sample's output channels (every layer but ToRGB).
        input_gain: scalar tensor multiplied into the weights after demodulation, or None.
        impl: 'auto' | 'ref' | 'cpu' | 'triton' (docs/ops.md "Backends"); 'triton' = the reference's grouped
            convolution on the GPU (no kernel of ours). The CPU path runs float16 inputs by the reference too.

    Returns:
        ``[N, O, H + 2p - k + 1, W + 2p - k + 1]`` in x's dtype, differentiable to any order.
    """
    op = "modulated_conv2d"
    check_conv_args(op, x, weight, "k, k")
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (x.shape[0], x.shape[1]):
        raise ValueError(f"{op}: styles must be [N, I] = [{x.shape[0]}, {x.shape[1]}], got "
                         f"{list(styles.shape) if isinstance(styles, torch.Tensor) else type(styles).__name__}")
    if select_impl(impl, x, op, has_kernel=False) == "cpu" and x.dtype != torch.float16:
        return modulated_conv2d_cpu(x, weight, styles, int(padding), bool(demodulate), input_gain)
    return modulated_conv2d_ref(x, weight, styles, int(padding), bool(demodulate), input_gain)
