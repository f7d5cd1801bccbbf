"""Building blocks shared by the generator and the discriminator.

Equalised learning rate (docs/algorithm.md "Equalised learning rate"): weights are stored unscaled and multiplied by a constant
gain at run time, so that Adam's step size is the same for every layer.

Every module that calls an op holds ``impl`` (given to its constructor, default 'auto') and passes it to the ops:
the choice of backend (docs/ops.md "Backends") travels with the network; the models never look at the device.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ops import bias_act, check_impl, conv2d, downsample2d, setup_filter, upfirdn2d

# StyleGAN2's resampling filter: outer product of [1,3,3,1], normalised to sum 1 -> [4, 4] float32
# (docs/algorithm.md "Op: upfirdn2d", "Discriminator"). Computed once at import so that networks can also be built on the meta device.
RESAMPLE_FILTER = setup_filter([1, 3, 3, 1])


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """`x * rsqrt(mean(x^2, dim) + eps)` (docs/algorithm.md "Mapping network" step 1), computed in the dtype of x."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Equalised-lr FC layer (docs/algorithm.md "Equalised learning rate").

    Stored weight `[out, in]` ~ N(0,1)*weight_init/lr_multiplier, bias `[out]` = bias_init/lr_multiplier.
    Forward: `act(x @ (W*lrm/sqrt(in)).T + b*lrm)` with bias_act's default gain for `activation`
    (sqrt(2) for lrelu). x: `[N, in]` float32 -> `[N, out]`.
    (The StyleGAN2 variant used by D stores bias_init undivided; all its biases start at 0, so the
    two coincide.)
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", bias: bool = True,
                 lr_multiplier: float = 1.0, weight_init: float = 1.0,
                 bias_init: Union[float, Sequence[float]] = 0.0, impl: str = "auto"):
        super().__init__()
        self.impl = check_impl(impl, type(self).__name__)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            b = torch.broadcast_to(torch.as_tensor(np.asarray(bias_init, dtype=np.float32)), [out_features])
            self.bias = nn.Parameter(b / lr_multiplier)
        else:
            self.bias = None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Discriminator convolution (docs/algorithm.md "Discriminator", "Resampling convolutions"): equalised lr, optional down-by-2 with the [1,3,3,1]
    filter, bias + activation + gain + clamp via bias_act.

    x: `[N, in, H, W]` -> `[N, out, H/down, W/down]` (same dtype as x).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = None,
                 trainable: bool = True, impl: str = "auto"):
        """trainable False: weight and bias are buffers, not parameters (a frozen layer, --freezed, docs/algorithm.md "Discriminator"):
        no optimizer sees them; the state_dict keys are the same."""
        super().__init__()
        assert down in (1, 2)
        self.impl = check_impl(impl, type(self).__name__)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", RESAMPLE_FILTER.clone())
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = math.sqrt(2) if activation == "lrelu" else 1.0
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        f = self.resample_filter
        if self.down == 1:
            # the weight gain goes to the op, which may fold it into its own weight transform (ops/conv2d.py)
            x = conv2d(x, self.weight, self.padding, gain=self.weight_gain, impl=self.impl)
        else:
            w = (self.weight * self.weight_gain).to(x.dtype)
            if self.kernel_size == 1:
                # 1x1 down-by-2 (skip path): low-pass + decimate first, then the cheap 1x1 conv (docs/algorithm.md "Resampling convolutions").
                x = downsample2d(x, f, down=2, impl=self.impl)
                x = torch.nn.functional.conv2d(x, w)
            else:
                # kxk down-by-2: low-pass without decimation (padding keeps the alignment), then a
                # stride-2 valid conv (docs/algorithm.md "Resampling convolutions"). Output size H/2 needs p = (fw - down + k - 1) / 2 per side,
                # i.e. 2 for the 4-tap filter and k = 3.
                p = (f.shape[-1] - self.down + self.kernel_size - 1) // 2
                x = upfirdn2d(x, f, padding=[p, p, p, p], impl=self.impl)
                x = torch.nn.functional.conv2d(x, w, stride=self.down)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, activation={self.activation}, down={self.down}")


__all__ = ["normalize_2nd_moment", "FullyConnectedLayer", "Conv2dLayer"]
