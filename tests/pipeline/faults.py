"""Fault injection for the Ray tests: step hooks (`build_trainer(..., step_hooks=[...])`) that the training loop
calls on every worker after each step. The production loop knows nothing of faults; tests install these."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitOnce:
    """Worker `rank` exits abruptly (os._exit(1)) after the step that reaches cur_nimg ≥ `nimg`, if the file
    `marker` does not exist yet; the marker is created first, so the fault happens once per run (the restarted
    worker passes it by)."""
    rank: int
    nimg: int
    marker: str

    def __call__(self, trainer) -> None:
        if trainer.rank != self.rank or trainer.cur_nimg < self.nimg or os.path.exists(self.marker):
            return
        open(self.marker, "w").close()
        # Ray Train's controller collects reported checkpoints when it polls the workers (every
        # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default); a worker that dies before the next poll takes its
        # last report with it. Wait a few polls so that the fault hits a run whose checkpoint is registered.
        time.sleep(4 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")) + 2)
        os._exit(1)
