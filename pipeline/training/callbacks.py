"""Hook for tracking and metrics inside the training loop (rank 0 only).

The loop builds the object named by `TrainConfig.run.callbacks` ("package.module:factory"; the factory
is called with the resolved TrainConfig and returns a `TrainCallbacks`) on the rank-0 worker and calls:

- on_start(trainer, resumed)      once, after weights/state are restored. `trainer.extra` is the
                                  free dict persisted in every checkpoint (e.g. store the MLflow run id
                                  there on a fresh start, read it back when `resumed` is True).
- on_tick(trainer, metrics)       every tick with the reported metrics (flat dict of floats: loss/*,
                                  kimg, tick, ada_p, sec_per_kimg, img_per_s, peak_mem_gb, ...).
- on_snapshot(trainer, directory, metrics) -> dict | None
                                  after the checkpoint files are written to the local staging
                                  `directory` (layout: pipeline.training.checkpoint) and before it is
                                  reported; may add files there, and returns extra metrics (e.g. a
                                  quality metric) that are merged into the report.
- on_end(trainer)                 after the last tick.

`trainer` is the `pipeline.training.trainer.Trainer`: trainer.G_ema / G / D, trainer.cfg, trainer.cur_nimg,
trainer.extra. Exceptions propagate (a failing tracker fails the worker, which FailureConfig restarts).
"""

from __future__ import annotations

import importlib
from typing import Any


class TrainCallbacks:
    """No-op base class; subclass and override what you need."""

    def on_start(self, trainer, resumed: bool) -> None:
        pass

    def on_tick(self, trainer, metrics: dict[str, Any]) -> None:
        pass

    def on_snapshot(self, trainer, directory: str, metrics: dict[str, Any]) -> dict[str, float] | None:
        return None

    def on_end(self, trainer) -> None:
        pass


def load_callbacks(spec: str | None, config=None) -> TrainCallbacks:
    """Build the callbacks named by "module:factory" (factory(config) -> TrainCallbacks); None = no-op."""
    if not spec:
        return TrainCallbacks()
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"callbacks {spec!r} must look like 'package.module:factory'")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(config)
