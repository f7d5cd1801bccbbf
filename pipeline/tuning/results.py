"""A sweep's results: one row per trial from Ray Tune's ResultGrid (parameters, last metric, kimg reached, state), the
best row, and the table, CSV and metric-vs-gamma plot written beside the sweep."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from ray import tune

from pipeline.training.launch import latest_checkpoint
from pipeline.tuning.space import metric_mode
from pipeline.tuning.sweep import Sweep

matplotlib.use("Agg")  # files only, no display

RESULTS_CSV, RESULTS_TXT, PLOT_PNG = "results.csv", "results.txt", "metric_vs_gamma.png"


@dataclass
class TrialRow:
    trial: str
    gamma: float
    glr: float
    dlr: float
    metric: float | None
    kimg: float
    state: str  # completed | stopped early | error | interrupted
    reason: str = ""
    checkpoint: str | None = None


def trial_states(results) -> dict[str, tuple[dict[str, Any] | None, str]]:
    """(config, status) of every trial of a ResultGrid by trial id, read back from its experiment with Tune's public
    ExperimentAnalysis: the status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED) tells a trial that an interrupted
    sweep left unfinished, and a trial that never reported has its config there only."""
    analysis = tune.ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    return {t.trial_id: (t.config, t.status) for t in analysis.trials}


def collect_rows(sweep: Sweep, results) -> list[TrialRow]:
    """One row per trial of a ResultGrid: its parameters, last reported metric, kimg reached and state."""
    trials = trial_states(results)
    rows = []
    for r in results:
        m = r.metrics or {}
        trial = m.get("trial_id") or (Path(r.path).name if r.path else "?")
        value = None
        df = r.metrics_dataframe
        if df is not None and sweep.metric in df:
            col = df[sweep.metric].dropna()
            value = float(col.iloc[-1]) if len(col) else None
        kimg = float(m.get("kimg") or 0.0)
        total = sweep.base.schedule.kimg
        if r.error is not None:
            state, reason = "error", f"error at {kimg:g} kimg: {str(r.error).splitlines()[0][:200]}"
        elif trials.get(trial, (None, "TERMINATED"))[1] != "TERMINATED" or not m:
            state, reason = "interrupted", f"interrupted at {kimg:g} kimg; continues when the sweep is resumed"
        elif kimg >= total - 1e-9:
            state, reason = "completed", f"completed {total:g} kimg"
        else:
            state = "stopped early"
            reason = (f"stopped early by ASHA at {kimg:g} kimg (behind at a rung)" if sweep.scheduler == "asha"
                      else f"stopped at {kimg:g} kimg")
        params = r.config or trials.get(trial, (None, None))[0]
        if not params:
            continue  # a trial Tune created but never configured: nothing to show
        ckpt = latest_checkpoint(sweep.trial_config(trial, params)) if m else None
        rows.append(TrialRow(trial, float(params["gamma"]), float(params["glr"]), float(params["dlr"]),
                             value, kimg, state, reason, ckpt))
    return sorted(rows, key=lambda row: row.trial)


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.metric is not None and math.isfinite(r.metric) and r.checkpoint]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda r: r.metric)


def format_table(rows: list[TrialRow], metric: str, best: TrialRow | None = None) -> str:
    head = ["trial", "gamma", "glr", "dlr", metric, "kimg", "state"]
    body = [[r.trial + (" *" if best is not None and r.trial == best.trial else ""), f"{r.gamma:.4g}",
             f"{r.glr:.3g}", f"{r.dlr:.3g}", "-" if r.metric is None else f"{r.metric:.4f}", f"{r.kimg:g}", r.state]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def rows_csv(rows: list[TrialRow], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "gamma", "glr", "dlr", metric, "kimg", "state", "reason", "checkpoint"])
    for r in rows:
        w.writerow([r.trial, r.gamma, r.glr, r.dlr, "" if r.metric is None else r.metric, r.kimg, r.state,
                    r.reason, r.checkpoint or ""])
    return buf.getvalue()


def plot_metric_vs_gamma(rows: list[TrialRow], metric: str, path: str | os.PathLike) -> None:
    """PNG: last metric of each trial against its gamma (log x), marker by state."""
    import matplotlib.pyplot as plt  # here: pyplot takes a second to import, and only the end of a sweep draws

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for state, marker in (("completed", "o"), ("stopped early", "x"), ("error", "s")):
        pts = [r for r in rows if r.state == state and r.metric is not None]
        if pts:
            ax.scatter([r.gamma for r in pts], [r.metric for r in pts], marker=marker, label=state)
    ax.set_xscale("log")
    ax.set_xlabel("R1 gamma")
    ax.set_ylabel(metric + (" (lower is better)" if metric_mode(metric) == "min" else " (dB, higher is better)"))
    ax.set_title(f"{metric} vs gamma, last value of each trial")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
