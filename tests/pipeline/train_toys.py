"""Tiny stand-in networks with the G/D interface of models/ (for one-process loss and step tests).

They are not the StyleGAN3 networks: the loss and step arithmetic is the same for any differentiable
G and D, and these run in milliseconds. The real networks are exercised by the Ray tests.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.training.config import TrainConfig


class ToyMapping(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int):
        super().__init__()
        self.fc = nn.Linear(z_dim, w_dim)
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.ema_updates = 0  # how many forward passes asked to update the EMAs

    def forward(self, z, c, update_emas=False):
        w = torch.tanh(self.fc(z))
        if update_emas:
            self.ema_updates += 1
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.9))
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)


class ToySynthesis(nn.Module):
    def __init__(self, w_dim: int, res: int, channels: int):
        super().__init__()
        self.fc = nn.Linear(w_dim, channels * res * res)
        self.shape = (channels, res, res)
        self.register_buffer("magnitude_ema", torch.ones([]))

    def forward(self, ws, update_emas=False):
        x = self.fc(ws.mean(1))
        if update_emas:
            self.magnitude_ema.copy_(x.detach().square().mean().lerp(self.magnitude_ema, 0.9))
        return torch.tanh(x).reshape(-1, *self.shape)


class ToyG(nn.Module):
    def __init__(self, z_dim=8, w_dim=8, res=16, channels=3, c_dim=0):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, w_dim, c_dim, res, channels
        self.mapping = ToyMapping(z_dim, w_dim, 3)
        self.synthesis = ToySynthesis(w_dim, res, channels)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        return self.synthesis(self.mapping(z, c, update_emas=update_emas), update_emas=update_emas)


class ToyD(nn.Module):
    def __init__(self, res=16, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * res * res, 1)

    def forward(self, img, c):
        return self.fc(torch.nn.functional.softplus(self.conv(img)).flatten(1))


def toy_config(**sections) -> TrainConfig:
    """A resolved TrainConfig for 16x16 RGB toys: batch 8, z_dim/w_dim 8, noaug unless overridden."""
    base = TrainConfig().replace(model={"z_dim": 8, "w_dim": 8}, schedule={"batch": 8},
                                 aug={"mode": "noaug"}, loss={"gamma": 1.0})
    return base.replace(**sections).resolved(resolution=16, img_channels=3, c_dim=0)
