"""Running a sweep on the connected Ray cluster: the Tuner (new, or restored to continue an interrupted sweep), the
real images read once for every trial's metric, and the end: results table and plot, MLflow runs closed, champion
registered (pipeline.tuning.promotion)."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline import storage
from pipeline.metrics import DATA_METRICS, RealImages
from pipeline.tuning.promotion import close_runs, parent_run
from pipeline.tuning.results import (PLOT_PNG, RESULTS_CSV, RESULTS_TXT, TrialRow, best_row, collect_rows,
                                     format_table, plot_metric_vs_gamma, rows_csv)
from pipeline.tuning.sweep import SWEEP_TAG, TRIAL_CPU, Sweep, check_cluster
from pipeline.tuning.trial import run_trial

REALS_FILE = "real_images.pt"
MAX_REALS_BYTES = 512 * 2**20  # larger real sets are read by each trial from the shards instead


def _tune_fs(uri: str):
    """(storage_filesystem or None, path) of a sweep URI for Ray Tune (pyarrow ignores AWS_ENDPOINT_URL)."""
    if storage.is_s3(uri):
        return storage.pyarrow_fs(uri)
    return None, str(Path(storage.parse(uri).path).resolve())


def real_images(sweep: Sweep) -> str | None:
    """URI of the metric's real images (uint8 [N, C, H, W], torch.save) in the sweep directory, read from the
    shards once here instead of by every trial; None when the metric needs none or they would be too large."""
    info = sweep.info
    if sweep.metric not in DATA_METRICS:
        return None
    n = min(sweep.metric_samples, info.num_images)
    if n * info.channels * info.resolution ** 2 > MAX_REALS_BYTES:
        return None
    uri = storage.join(sweep.root, REALS_FILE)
    if not storage.exists(uri):
        buf = io.BytesIO()
        torch.save(RealImages.from_uri(sweep.base.data.uri).take(n).contiguous(), buf)
        storage.write_bytes(uri, buf.getvalue())
    return uri


def make_tuner(sweep: Sweep, max_concurrent: int, parent_run_id: str | None, callbacks: list | None = None):
    """Tuner.restore of the sweep's experiment when it exists (continue), else a new Tuner."""
    # Every trial's config is this one with its own parameters (trial_config): the tracking section makes its run a
    # child of the sweep's parent run and hands it the real images read once here.
    base = sweep.base.replace(tracking={"parent_run_id": parent_run_id, "reals_uri": real_images(sweep),
                                        "tags": {SWEEP_TAG: sweep.name}})
    payload = {"base": base.to_dict(), "trials_storage": sweep.trials_storage}
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=payload), {"CPU": TRIAL_CPU})
    fs, path = _tune_fs(sweep.root)
    exp_path = f"{path.rstrip('/')}/tune"
    if tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs), True
    scheduler = (ASHAScheduler(time_attr="kimg", max_t=sweep.base.schedule.kimg, grace_period=sweep.grace_kimg,
                               reduction_factor=sweep.reduction_factor)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    tune_config = tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                                  num_samples=sweep.num_samples,
                                  # Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
                                  search_alg=BasicVariantGenerator(random_state=sweep.seed,
                                                                   max_concurrent=max_concurrent),
                                  trial_dirname_creator=lambda t: t.trial_id)
    run_config = tune.RunConfig(name="tune", storage_path=path, storage_filesystem=fs, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=0), verbose=1,
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    param_space = {k: s.domain() for k, s in sweep.spaces.items()}
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config), False


def finish(sweep: Sweep, rows: list[TrialRow], parent_run_id: str | None, complete: bool) -> dict[str, Any]:
    """Write the table and plot to the sweep directory (and the parent run), close the child runs with their
    stop reason, register the best trial's generator as `champion` once every trial has finished.
    Returns a summary dict."""
    best = best_row(rows, sweep.mode)
    table = format_table(rows, sweep.metric, best)
    summary: dict[str, Any] = {"best": best, "rows": rows, "table": table, "champion_version": None}
    with tempfile.TemporaryDirectory(prefix="sg3-tune-") as tmp:
        files = {RESULTS_TXT: Path(tmp) / RESULTS_TXT, RESULTS_CSV: Path(tmp) / RESULTS_CSV,
                 PLOT_PNG: Path(tmp) / PLOT_PNG}
        files[RESULTS_TXT].write_text(table + "\n")
        files[RESULTS_CSV].write_text(rows_csv(rows, sweep.metric))
        plot_metric_vs_gamma(rows, sweep.metric, files[PLOT_PNG])
        for name, f in files.items():
            storage.upload_file(f, storage.join(sweep.root, name))
        if parent_run_id:
            summary["champion_version"] = close_runs(sweep, rows, best, parent_run_id, complete,
                                                     list(files.values()), Path(tmp))
    return summary


def run_sweep(sweep: Sweep, callbacks: list | None = None, log=print) -> dict[str, Any]:
    """Run (or continue) the sweep on the connected Ray cluster; returns finish()'s summary plus
    'complete' (every trial ran to a final state) and 'restored'."""
    max_concurrent = check_cluster(sweep)
    parent = None
    if sweep.tracking:
        parent = parent_run(sweep, max_concurrent)
    tuner, restored = make_tuner(sweep, max_concurrent, parent, callbacks)
    log(f"sweep {sweep.name}: {'continuing' if restored else 'starting'} {sweep.num_samples} trial(s) of "
        f"{sweep.base.schedule.kimg:g} kimg, {max_concurrent} at a time, {sweep.scheduler} on {sweep.metric} "
        f"({sweep.mode}); " + ", ".join(f"{k} {s}" for k, s in sweep.spaces.items()))
    log(f"  storage: {sweep.root}")
    start = time.time()
    results = tuner.fit()
    rows = collect_rows(sweep, results)
    complete = len(rows) >= sweep.num_samples and all(r.state != "interrupted" for r in rows)
    summary = finish(sweep, rows, parent, complete)
    summary.update(complete=complete, restored=restored, parent_run_id=parent, wall_s=time.time() - start)
    log("\n" + summary["table"])
    best = summary["best"]
    if best is not None:
        log(f"\nbest: trial {best.trial}  gamma {best.gamma:.4g}  glr {best.glr:.3g}  dlr {best.dlr:.3g}  "
            f"{sweep.metric} {best.metric:.4f} at {best.kimg:g} kimg")
        log(f"  checkpoint: {best.checkpoint}")
        if summary["champion_version"]:
            log(f"  registered: models:/{sweep.model_name}@champion (version {summary['champion_version']})")
    log(f"  table + plot: {storage.join(sweep.root, RESULTS_TXT)}, {storage.join(sweep.root, PLOT_PNG)}")
    if not complete:
        done = sum(r.state != "interrupted" for r in rows)
        log(f"the sweep was interrupted ({done} of {sweep.num_samples} trials finished); run the same command "
            "again to continue it")
    return summary
