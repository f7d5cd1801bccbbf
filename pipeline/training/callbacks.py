"""Hooks for tracking and metrics inside the training loop (rank 0 only).

On the rank-0 worker the loop builds the tracking hook that `TrainConfig.tracking` describes (pipeline.tracking's
MLflow callbacks, or nothing with --tracking 0) plus any extra callbacks the launcher was given
(`launch.build_trainer(train_callbacks=[factory, ...])`, factory(cfg) -> TrainCallbacks; tests record the worker's
state with one), combines them in a `CallbackList` and calls:

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


class CallbackList(TrainCallbacks):
    """Several callbacks called in order; the extra metrics of their on_snapshot are merged."""

    def __init__(self, callbacks: list[TrainCallbacks]):
        self.callbacks = list(callbacks)

    def on_start(self, trainer, resumed: bool) -> None:
        for cb in self.callbacks:
            cb.on_start(trainer, resumed)

    def on_tick(self, trainer, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_tick(trainer, metrics)

    def on_snapshot(self, trainer, directory: str, metrics: dict[str, Any]) -> dict[str, float] | None:
        extra: dict[str, float] = {}
        for cb in self.callbacks:
            extra.update(cb.on_snapshot(trainer, directory, {**metrics, **extra}) or {})
        return extra or None

    def on_end(self, trainer) -> None:
        for cb in self.callbacks:
            cb.on_end(trainer)
