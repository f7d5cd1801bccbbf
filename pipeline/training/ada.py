"""Adaptive augmentation probability controller, docs/algorithm.md "ADA" (ADA paper §2.3, heuristic r_t).

The overfitting heuristic is ``r_t = E[sign(D(real))]``, accumulated over the real-image passes of
the Dmain and Dreg phases (docs/algorithm.md "Loss", ``Loss/signs/real``). Every ``interval`` iterations::

    p <- max(p + sign(mean(signs) - target) · batch · interval / (ada_kimg · 1000), 0)

so ``p`` can move from 0 to 1 in ``ada_kimg`` thousand real images. At batch 32, interval 4,
ada_kimg 500 each update is ±2.56e-4. There is no upper clamp (the pipe treats p > 1 as 1).

Typical use in the training loop (one process or one Ray worker)::

    ada = AdaController("ada", target=0.6, interval=4, ada_kimg=500)
    ada.pipe.to(device)                       # None for --aug=noaug
    ...  # in Dmain / Dreg: logits = D(ada.pipe(real), c); ada.observe(logits)
    ada.step(batch_size=32, reduce=all_reduce_sum)   # once per iteration, after the phases
    checkpoint["ada"] = ada.state_dict()
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from pipeline.training.augment import AugmentPipe

__all__ = ["AdaController", "ADA_MODES"]

ADA_MODES = ("ada", "fixed", "noaug")


class AdaController:
    """Owns the augmentation pipe (if any) and drives its probability ``p``.

    Args:
        mode: ``"ada"`` (adaptive p starting at ``initial_p``), ``"fixed"`` (p = ``fixed_p`` for
            the whole run) or ``"noaug"`` (no pipe; ``pipe`` is None) -- the values of ``--aug``.
        fixed_p: the constant probability for ``mode="fixed"`` (``--p``, default 0.2).
        target: ADA target value of E[sign(real logits)] (``--target``, 0.6).
        interval: iterations between adjustments (4).
        ada_kimg: thousands of real images over which p may move by 1 (500; 100 when
            fine-tuning from ``--resume``, docs/algorithm.md "Official training options").
        initial_p: starting p for ``mode="ada"`` (0).
        pipe: the AugmentPipe to drive; default ``AugmentPipe.bgc()`` for ada/fixed.
    """

    def __init__(self, mode: str = "ada", *, fixed_p: float = 0.2, target: float = 0.6,
                 interval: int = 4, ada_kimg: float = 500, initial_p: float = 0.0,
                 pipe: Optional[AugmentPipe] = None):
        if mode not in ADA_MODES:
            raise ValueError(f"--aug={mode!r} is not one of {', '.join(ADA_MODES)}")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"ADA interval={interval!r} must be a positive integer (iterations)")
        if not ada_kimg > 0:
            raise ValueError(f"ada_kimg={ada_kimg!r} must be > 0 (thousands of images)")
        if mode == "fixed" and not (0 <= fixed_p <= 1):
            raise ValueError(f"--p={fixed_p!r} must be in [0, 1] for --aug=fixed")
        if mode == "ada" and not (initial_p >= 0 and math.isfinite(initial_p)):
            raise ValueError(f"initial ADA p={initial_p!r} must be a finite number >= 0")
        if mode == "noaug" and pipe is not None:
            raise ValueError("--aug=noaug takes no augmentation pipe")
        self.mode = mode
        self.target = float(target)
        self.interval = int(interval)
        self.ada_kimg = float(ada_kimg)
        self.pipe: Optional[AugmentPipe] = None if mode == "noaug" else (pipe or AugmentPipe.bgc())
        self._p = {"ada": float(initial_p), "fixed": float(fixed_p), "noaug": 0.0}[mode]
        # Sum of sign(real logit) since the last adjustment: a tensor on the logits' device, so that observing a
        # chunk never waits for the device (read once per adjustment, in `step`); 0.0 until the first observe.
        self._sign_sum: torch.Tensor | float = 0.0
        self._sign_count = 0.0    # number of real logits behind _sign_sum (known on the host)
        self.step_idx = 0         # iterations seen (the loop's batch_idx)
        self.last_signs_mean: Optional[float] = None  # E[sign(real logits)] of the last adjustment
        self._sync_pipe()

    @property
    def p(self) -> float:
        """Current augmentation probability."""
        return self._p

    def _sync_pipe(self) -> None:
        if self.pipe is not None:
            self.pipe.set_p(self._p)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(real logits) [N, 1] (any shape) from a Dmain or Dreg real pass."""
        logits = real_logits.detach()
        # No float(): stays on the device (no host-device synchronisation per chunk).
        self._sign_sum = torch.sign(logits).sum(dtype=torch.float64) + self._sign_sum
        self._sign_count += float(logits.numel())

    def step(self, batch_size: int,
             reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
        """Call once per iteration after all phases. After every ``interval``-th iteration (iterations
        interval, 2·interval, … counted from 1: the official loop tests ``batch_idx % interval == 0`` after
        ``batch_idx += 1``) adjusts p from the signs observed since the previous adjustment.

        Args:
            batch_size: the global batch (all workers together), images per iteration.
            reduce: optional cross-worker sum for a float64 tensor [2] = (sign sum, count), e.g.
                ``lambda t: (torch.distributed.all_reduce(t), t)[1]``; every worker must call
                ``step`` on the same iterations so the all-reduce lines up.
        Returns:
            p after this iteration.
        """
        self.step_idx += 1
        if not (self.mode == "ada" and self.step_idx % self.interval == 0):
            return self._p
        total = torch.as_tensor(self._sign_sum, dtype=torch.float64)
        stats = torch.stack([total, torch.tensor(self._sign_count, dtype=torch.float64, device=total.device)])
        if reduce is not None:
            stats = reduce(stats)
        self._sign_sum, self._sign_count = 0.0, 0.0
        total, count = stats.tolist()  # one read per adjustment, not per chunk
        if count > 0:
            self.last_signs_mean = total / count
            diff = self.last_signs_mean - self.target
            direction = float((diff > 0) - (diff < 0))  # sign(mean − target)
            adjust = direction * batch_size * self.interval / (self.ada_kimg * 1000)
            self._p = max(self._p + adjust, 0.0)
            self._sync_pipe()
        return self._p

    def state_dict(self) -> dict:
        """JSON-safe state for checkpoints (p, pending sign statistics, step counter, settings)."""
        return {"mode": self.mode, "p": self._p, "target": self.target, "interval": self.interval,
                "ada_kimg": self.ada_kimg, "sign_sum": float(self._sign_sum),
                "sign_count": self._sign_count, "step_idx": self.step_idx,
                "last_signs_mean": self.last_signs_mean}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; the mode must match this run's ``--aug``."""
        missing = {"mode", "p", "sign_sum", "sign_count", "step_idx"} - set(state)
        if missing:
            raise ValueError(f"ADA state is missing {sorted(missing)}; got keys {sorted(state)}")
        if state["mode"] != self.mode:
            raise ValueError(f"checkpoint was trained with --aug={state['mode']} but this run uses "
                             f"--aug={self.mode}; rerun with --aug={state['mode']} to resume it")
        self._p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._sign_count = float(state["sign_count"])
        self.step_idx = int(state["step_idx"])
        self.last_signs_mean = state.get("last_signs_mean")
        self._sync_pipe()
