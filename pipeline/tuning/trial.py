"""One trial of a sweep, run by Ray Tune in its own actor: an ordinary training run (pipeline.training.launch) with the
trial's gamma and learning rates (pipeline.tuning.sweep.trial_config), its tick reports forwarded to Tune."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from pipeline.data import dataset_info
from pipeline.training.config import TrainConfig
from pipeline.training.launch import build_trainer
from pipeline.tuning.sweep import trial_config


def run_trial(params: dict[str, float], sweep: dict[str, Any]) -> None:
    """One trial: the pipeline.train TorchTrainer with this trial's gamma/glr/dlr, its reports forwarded to
    Tune by TuneReportCallback. A restarted trial continues from its own latest checkpoint (same run name)."""
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(TrainConfig.from_dict(sweep["base"]), sweep["trials_storage"], trial_id, params)
    result = build_trainer(cfg, dataset_info(cfg.data.uri), progress=False, callbacks=[TuneReportCallback()]).fit()
    if result.error is not None:
        raise result.error
