"""A sweep in MLflow: its parent run (found again when the sweep continues), and at the end the trials' child runs
closed with their stop reason and the best trial's generator registered as `champion`."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag

from pipeline.model_sources import fetch_network
from pipeline.tracking import CHAMPION_ALIAS, _local_artifact_root, register_generator, safe_params
from pipeline.tuning.results import TrialRow
from pipeline.tuning.sweep import SWEEP_TAG, TRIAL_TAG, Sweep


def mlflow_client(sweep: Sweep):
    """A client of the sweep's MLflow store (the URI resolved on the driver by prepare, in sweep.base.tracking)."""
    uri = sweep.base.tracking.uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def parent_run(sweep: Sweep, max_concurrent: int) -> str:
    """The sweep's parent MLflow run: found by its tags when resuming, else created with the sweep's params."""
    client, uri = mlflow_client(sweep)
    exp = client.get_experiment_by_name(sweep.experiment)
    if exp is None:
        root = _local_artifact_root(uri)
        exp_id = client.create_experiment(sweep.experiment,
                                          artifact_location=f"{root}/{sweep.experiment}" if root else None)
    else:
        exp_id = exp.experiment_id
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep.name}' and "
                                                       f"tags.`stylegan3.tune.role` = 'parent'", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=sweep.name, tags={SWEEP_TAG: sweep.name,
                                                                "stylegan3.tune.role": "parent",
                                                                "stylegan3.sweep_dir": sweep.root})
    fixed = {f"fixed.{k}": v for k, v in sweep.base.flatten().items()
             if k not in ("loss.gamma", "optim.glr", "optim.dlr", "run.run_name", "run.storage")
             and not k.startswith("tracking.")}
    params = {**{f"space.{k}": str(s) for k, s in sweep.spaces.items()},
              "tune.num_samples": sweep.num_samples, "tune.metric": sweep.metric, "tune.mode": sweep.mode,
              "tune.scheduler": sweep.scheduler, "tune.grace_kimg": sweep.grace_kimg,
              "tune.reduction_factor": sweep.reduction_factor, "tune.max_concurrent": max_concurrent,
              "tune.metric_samples": sweep.metric_samples, "tune.storage": sweep.root, **fixed}
    items = [Param(k, v) for k, v in safe_params(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    if sweep.argv:
        client.log_batch(run.info.run_id, tags=[RunTag("stylegan3.tune.command",
                                                       "python -m pipeline.tune " + " ".join(sweep.argv))])
    return run.info.run_id


def close_runs(sweep: Sweep, rows: list[TrialRow], best: TrialRow | None, parent_run_id: str, complete: bool,
               files: list[Path], tmp: Path) -> str | None:
    """Attach the result files to the parent run, tag each trial's child run with its stop reason and state and close
    it, register the best trial's generator as `champion` once every trial has finished, close the parent run.
    Returns the champion's model version, or None."""
    client, _ = mlflow_client(sweep)
    for f in files:
        client.log_artifact(parent_run_id, str(f))
    children = client.search_runs([client.get_run(parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    by_trial = {c.data.tags.get(TRIAL_TAG): c for c in children}
    for row in rows:
        child = by_trial.get(row.trial)
        if child is None:
            continue
        client.set_tag(child.info.run_id, "stop_reason", row.reason)
        client.set_tag(child.info.run_id, "stylegan3.tune.state", row.state)
        if row.state != "interrupted":
            client.set_terminated(child.info.run_id, "FAILED" if row.state == "error" else "FINISHED")
    version = None
    if best is not None and complete and best.trial in by_trial:  # once, when every trial has finished
        local = fetch_network(best.checkpoint, tmp / "champion")
        version = register_generator(client, by_trial[best.trial].info.run_id, local, sweep.model_name,
                                     kimg=best.kimg, metrics={sweep.metric: best.metric},
                                     manifest_sha256=sweep.info.manifest_sha256)
        client.set_registered_model_alias(sweep.model_name, CHAMPION_ALIAS, version)
        client.set_model_version_tag(sweep.model_name, version, SWEEP_TAG, sweep.name)
        client.set_model_version_tag(sweep.model_name, version, TRIAL_TAG, best.trial)
        client.log_batch(parent_run_id, metrics=[Metric(f"best_{sweep.metric}", best.metric,
                                                        int(time.time() * 1000), 0)],
                         tags=[RunTag("stylegan3.tune.best_trial", best.trial),
                               RunTag("stylegan3.tune.champion", f"models:/{sweep.model_name}@champion "
                                                                 f"(version {version})")])
    client.set_terminated(parent_run_id, "FINISHED" if complete else "KILLED")
    return version
