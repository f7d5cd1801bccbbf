"""`python -m pipeline.tune` on a real local Ray (2 CPUs) with a real sqlite MLflow store: a 4-trial ASHA sweep
(early stopping, one parent run with four child runs, champion registered), an interrupted sweep that continues
with the same --name, and the argument errors that must stop before any trial starts. Tiny networks at 16x16."""

from __future__ import annotations

import csv
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from pipeline import tune as T
from pipeline.tuning import space as S
from pipeline.tuning.results import PLOT_PNG, RESULTS_CSV, RESULTS_TXT
from pipeline.training.config import ConfigError

# -- search-space strings and defaults (no Ray) ---------------------------------------------------------

def test_space_strings_parse_and_bad_ones_name_the_flag():
    assert S.parse_space("loguniform:0.25:16") == S.Space("loguniform", (0.25, 16.0))
    assert S.parse_space("uniform:1e-3:2e-3") == S.Space("uniform", (0.001, 0.002))
    assert S.parse_space("choice:0.5, 2,8") == S.Space("choice", (0.5, 2.0, 8.0))
    assert S.parse_space("3.3") == S.Space("fixed", (3.3,))
    assert str(S.parse_space("choice:0.5,2")) == "choice:0.5,2"
    for text, words in [("loguniform:1", "two bounds"), ("loguniform:4:1", "below the upper"),
                        ("uniform:a:2", "'a' is not a number"), ("normal:0:1", "unknown kind 'normal'"),
                        ("choice:", "at least one"), ("-2", "positive"), ("loguniform:0:1", "positive"),
                        ("two", "not a number")]:
        with pytest.raises(S.SpaceError, match="--gamma") as e:
            S.parse_space(text, "--gamma")
        assert words in str(e.value), (text, str(e.value))


def test_default_spaces_follow_the_resolution_rule():
    for res, centre in [(128, 0.5), (256, 2.0), (512, 8.0), (16, 2 * (16 / 256) ** 2)]:
        g = S.default_spaces(res, "stylegan3-t")["gamma"]
        assert g.kind == "loguniform"
        assert g.values == pytest.approx((centre / 8, centre * 8))
    lr = S.default_spaces(256, "stylegan3-r")
    assert math.sqrt(lr["glr"].values[0] * lr["glr"].values[1]) == pytest.approx(0.0025)
    assert math.sqrt(lr["dlr"].values[0] * lr["dlr"].values[1]) == pytest.approx(0.002)
    assert S.metric_mode("swd") == "min" and S.metric_mode("eqt") == "max"


# Each trial starts its own Train controller, worker and data stream: on an idle 2-core machine a 4-trial sweep
# took ~4 min here. A hung sweep (e.g. CPU reservations never released) must fail well inside CI's time.
SWEEP_TIMEOUT_S = 900


# -- sweeps on Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(session_dir):
    from pipeline.data import ensure_demo_shards

    return ensure_demo_shards(session_dir / "tune-shards", 16, max_images=32, progress=False)


@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def tiny_args(shards: str, storage: Path, name: str, *extra: str) -> list[str]:
    """16x16, 16 channels, batch 4, one step per tick (a snapshot with SWD on 8 images every tick; the default
    quality curve is off: these tests check the sweep's own metric, and it would add ~1 s per snapshot)."""
    return ["--data", shards, "--cfg", "stylegan3-t", "--cbase", "256", "--cmax", "16", "--batch", "4",
            "--tick", "0.004", "--aug", "noaug", "--metric-samples", "8", "--quality", "0", "--storage", str(storage),
            "--name", name, "--experiment", "tune-test", "--model-name", f"tune-test-{name}", *extra]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _asha_decisions(rung_values: list[float], reduction_factor: int) -> list[bool]:
    """Which trials asynchronous successive halving stops at a rung, for a metric to minimise, given the trials'
    values in the order they reached it: the first always goes on; each later one stops when it is worse than the
    best 1/reduction_factor of those recorded before it (the rule of Li et al. 2020 that Ray's ASHAScheduler
    applies, written out here independently)."""
    stops = []
    for k, v in enumerate(rung_values):
        before = rung_values[:k]
        cutoff = float(np.percentile(before, 100 / reduction_factor)) if before else math.inf
        stops.append(v > cutoff)
    return stops


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_asha_sweep_stops_trials_early_logs_child_runs_and_registers_champion(ray_local, shards, tmp_path,
                                                                               mlflow_db, capsys):
    name = "asha4"
    # 2 ticks per trial, one ASHA rung after the first. One trial at a time, so that the order in which the
    # trials reach the rung is their trial order and ASHA's decisions can be checked against the rule.
    argv = tiny_args(shards, tmp_path / "sweeps", name, "--num-samples", "4", "--kimg-per-trial", "0.008",
                     "--grace-kimg", "0.004", "--reduction-factor", "4", "--max-concurrent", "1",
                     "--gamma", "loguniform:0.01:10")
    assert T.main(argv) == 0
    out = capsys.readouterr().out
    assert "trial" in out and "gamma" in out and "state" in out  # the printed results table

    root = tmp_path / "sweeps" / name
    rows = _rows(root / RESULTS_CSV)
    assert len(rows) == 4
    assert len({r["gamma"] for r in rows}) == 4  # four different gammas were sampled
    assert all(0.01 <= float(r["gamma"]) <= 10 for r in rows)
    assert all(r["swd"] and math.isfinite(float(r["swd"])) for r in rows)
    assert (root / PLOT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stopped = [r for r in rows if r["state"] == "stopped early"]
    assert all(float(r["kimg"]) == pytest.approx(0.004) and "ASHA" in r["reason"] for r in stopped)
    assert all(r["state"] in ("stopped early", "completed") for r in rows), rows
    assert any(r["state"] == "completed" and float(r["kimg"]) == pytest.approx(0.008) for r in rows)

    # MLflow: one parent, four children with their params, per-tick metrics and stop reason.
    exp = mlflow_db.get_experiment_by_name("tune-test")
    parents = mlflow_db.search_runs([exp.experiment_id], "tags.`stylegan3.tune.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    children = mlflow_db.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    by_trial = {c.data.tags["stylegan3.tune.trial"]: c for c in children}
    assert set(by_trial) == {r["trial"] for r in rows}
    for r in rows:
        child = by_trial[r["trial"]]
        assert float(child.data.params["loss.gamma"]) == pytest.approx(float(r["gamma"]))
        assert float(child.data.params["optim.glr"]) == pytest.approx(float(r["glr"]))
        assert child.data.tags["stop_reason"] == r["reason"]
        kimg_history = mlflow_db.get_metric_history(child.info.run_id, "kimg")
        assert len(kimg_history) >= 1 and "swd" in child.data.metrics
    completed = [r for r in rows if r["state"] == "completed"]
    assert len(mlflow_db.get_metric_history(by_trial[completed[0]["trial"]].info.run_id, "kimg")) == 2
    # ASHA stopped exactly the trials that the rule stops, given each trial's SWD at the rung (its first report).
    order = sorted(by_trial)
    rung = [min(mlflow_db.get_metric_history(by_trial[t].info.run_id, "swd"), key=lambda m: (m.step, m.timestamp))
            .value for t in order]
    expected = _asha_decisions(rung, 4)
    assert [r["state"] == "stopped early" for r in sorted(rows, key=lambda r: r["trial"])] == expected, (rung, rows)
    artifacts = {a.path for a in mlflow_db.list_artifacts(parent.info.run_id)}
    assert {RESULTS_CSV, RESULTS_TXT, PLOT_PNG} <= artifacts
    assert parent.data.params["space.gamma"] == "loguniform:0.01:10"

    # Champion: the best trial's (lowest SWD) generator, registered under its child run.
    best = min((r for r in rows if r["checkpoint"]), key=lambda r: float(r["swd"]))
    mv = mlflow_db.get_model_version_by_alias(f"tune-test-{name}", "champion")
    assert mv.run_id == by_trial[best["trial"]].info.run_id
    assert float(mv.tags["metric.swd"]) == pytest.approx(float(best["swd"]), rel=1e-4)
    assert mlflow_db.get_run(parent.info.run_id).data.tags["stylegan3.tune.best_trial"] == best["trial"]
    from pipeline.model_sources import load_generator

    G = load_generator(f"models:/tune-test-{name}@champion")
    assert G.img_resolution == 16


def _interrupt_after_first_trial(marker: Path):
    """Injected interruption: a Ctrl-C (SIGINT to this process, which Tune turns into a graceful stop) once the
    first trial has finished, the first time only: Tune saves this callback with the experiment and restores it,
    so a marker file remembers that it fired."""
    from ray.tune import Callback

    class InterruptOnce(Callback):
        def __init__(self, marker: str):
            self.marker = marker

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not Path(self.marker).exists():
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGINT)

    return InterruptOnce(str(marker))


@pytest.mark.slow
@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_interrupted_sweep_continues_with_the_same_name(ray_local, shards, tmp_path, mlflow_db, capsys):
    name = "resumable"
    argv = tiny_args(shards, tmp_path / "sweeps", name, "--num-samples", "2", "--kimg-per-trial", "0.008",
                     "--scheduler", "none", "--max-concurrent", "1", "--gamma", "choice:0.1,1")
    assert T.main(argv, callbacks=[_interrupt_after_first_trial(tmp_path / "interrupted")]) == 3
    assert "run the same command again to continue" in capsys.readouterr().out
    root = tmp_path / "sweeps" / name
    first = _rows(root / RESULTS_CSV)
    done_first = [r for r in first if r["state"] == "completed"]
    assert len(done_first) == 1
    ckpts_before = sorted(p.name for p in (root / "trials" / done_first[0]["trial"]).glob("checkpoint_*"))

    assert T.main(argv) == 0
    rows = _rows(root / RESULTS_CSV)
    assert len(rows) == 2 and all(r["state"] == "completed" for r in rows)
    assert done_first[0]["trial"] in {r["trial"] for r in rows}  # same experiment, same trial ids
    # The finished trial was not trained again.
    assert sorted(p.name for p in (root / "trials" / done_first[0]["trial"]).glob("checkpoint_*")) == ckpts_before
    exp = mlflow_db.get_experiment_by_name("tune-test")
    parents = mlflow_db.search_runs([exp.experiment_id], "tags.`stylegan3.tune.role` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = mlflow_db.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert sorted(c.data.tags["stylegan3.tune.trial"] for c in children) == sorted(r["trial"] for r in rows)
    assert mlflow_db.get_model_version_by_alias(f"tune-test-{name}", "champion") is not None


@pytest.mark.slow
def test_bad_arguments_fail_before_any_trial(ray_local, shards, tmp_path, mlflow_db, capsys):
    storage = tmp_path / "sweeps"
    cases = [
        (["--gamma", "loguniform:8:2"], "--gamma 'loguniform:8:2'"),
        (["--glr", "choice:fast"], "--glr"),
        (["--metric", "is"], "--metric 'is' is not computed"),
        (["--workers-per-trial", "8", "--batch", "32"], "needs 4.26 CPUs but the cluster has 2"),
        (["--num-samples", "0"], "--num-samples"),
        (["--grace-kimg", "5", "--kimg-per-trial", "1"], "--grace-kimg"),
    ]
    if not _has_fid_detector():
        cases.append((["--metric", "fid"], "needs an Inception detector"))
    for extra, words in cases:
        assert T.main(tiny_args(shards, storage, "bad", *extra)) == 2, extra
        err = capsys.readouterr().err
        assert words in err, (extra, err)
    assert not (storage / "bad").exists()  # nothing was started
    assert mlflow_db.search_experiments(filter_string="name = 'tune-test'") == []
    with pytest.raises(SystemExit):
        T.main(tiny_args(shards, storage, "bad", "--scheduler", "hyperband"))
    with pytest.raises(ConfigError, match="no data"):
        T.plan(T.make_parser().parse_args(["--name", "x"]))


def _has_fid_detector() -> bool:
    from pipeline.metrics.fid import fid_helper_model_path

    return fid_helper_model_path() is not None
