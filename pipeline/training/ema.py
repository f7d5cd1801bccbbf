"""Exponential moving average of the generator's weights (docs/algorithm.md "Generator EMA")."""

from __future__ import annotations

import torch


def ema_beta(batch: int, ema_kimg: float, cur_nimg: int, ema_rampup: float | None) -> float:
    """EMA decay for one step of `batch` images (docs/algorithm.md "Generator EMA").

    ema_nimg = ema_kimg·1000, capped at cur_nimg·ema_rampup while ramping up (rampup None = no cap);
    β = 0.5^(batch / max(ema_nimg, 1e-8)), i.e. the EMA half-life is ema_nimg images.
    At cur_nimg = 0 with ramp-up on, β = 0: G_ema becomes a copy of G.
    """
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """p_ema ← lerp(p, p_ema, β) for every parameter; every buffer copied from G (w_avg, magnitude EMAs, filters)."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())
