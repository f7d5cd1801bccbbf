"""A training callbacks object for the Ray tests: records what the rank-0 worker holds at the start of a
run (after any restore), at snapshots and at the end to a JSON-lines file
(`launch.fit(..., train_callbacks=[Recorder.factory(path)])`)."""

from __future__ import annotations

import functools
import json

import torch

from pipeline.training.callbacks import TrainCallbacks


def state_summary(trainer) -> dict:
    """Comparable numbers of a worker's state: counters, ADA state, optimizer moments, G_ema weights."""
    def moments(opt):
        return sum(float(s["exp_avg_sq"].double().sum()) for s in opt.state.values() if "exp_avg_sq" in s)

    return {
        "cur_nimg": trainer.cur_nimg, "batch_idx": trainer.batch_idx, "cur_tick": trainer.cur_tick,
        "ada": trainer.ada.state_dict(),
        "G_opt_moments": moments(trainer.G_opt), "D_opt_moments": moments(trainer.D_opt),
        "G_ema_sum": float(sum(p.double().sum() for p in trainer.G_ema.parameters())),
        "G_ema_sq": float(sum(p.double().square().sum() for p in trainer.G_ema.parameters())),
        "extra": {k: v for k, v in trainer.extra.items() if isinstance(v, (str, int, float, type(None)))},
    }


class Recorder(TrainCallbacks):
    def __init__(self, path, cfg=None):
        self.path = str(path)

    @classmethod
    def factory(cls, path):
        """A picklable factory(cfg) -> Recorder writing to `path` (travels to the rank-0 worker)."""
        return functools.partial(cls, str(path))

    def _write(self, event: str, trainer, **more) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, **state_summary(trainer), **more}) + "\n")

    def on_start(self, trainer, resumed: bool) -> None:
        self._write("start", trainer, resumed=resumed)

    def on_snapshot(self, trainer, directory, metrics):
        self._write("snapshot", trainer)
        return {"test_metric": 1.0}

    def on_end(self, trainer) -> None:
        self._write("end", trainer)


def read(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def checkpoint_summary(directory, cfg) -> dict:
    """state_summary of a checkpoint directory, rebuilt through a fresh Trainer (no Ray)."""
    from pipeline.training import checkpoint
    from pipeline.training.loop import build_networks
    from pipeline.training.trainer import Trainer

    G, D = build_networks(cfg)
    t = Trainer(cfg, G, D)
    checkpoint.restore(t, directory)
    torch.set_grad_enabled(True)
    return state_summary(t)
