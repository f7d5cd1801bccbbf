"""What `python -m pipeline.train` prints around a run: the run line before it starts and the summary after it ends
(where the checkpoints, grids, MLflow and progress picture are, the quality at the first and last snapshot, and
the commands to go on)."""

from __future__ import annotations

import json
import shlex

from pipeline import storage
from pipeline.training.checkpoint import CORRUPT_FILE, GRID_FILE
from pipeline.training.config import TrainConfig
from pipeline.training.flags import gamma_note
from pipeline.training.launch import run_dir
from pipeline.training.progress import HISTORY_FILE, PROGRESS_FILE, QUALITY_KEY, History


def run_lines(cfg: TrainConfig, info, gamma_given: float | None, previous: str | None) -> list[str]:
    """The run line (settings, data, gamma and where it came from), where the checkpoints go, and notes."""
    m = cfg.model
    lines = [f"run {cfg.run.run_name}: {m.preset} {m.resolution}x{m.resolution}, {info.num_images} images from "
             f"{cfg.data.uri}, batch {cfg.schedule.batch} on {cfg.run.workers} worker(s), gamma "
             f"{cfg.loss.gamma:g}{gamma_note(gamma_given)}, {cfg.schedule.kimg:g} kimg",
             f"  checkpoints: {run_dir(cfg)}" + (f"  (resuming from {previous})" if previous else "")]
    if cfg.data.cond and info.label_counts is None:
        lines.append(f"  note: the manifest of {cfg.data.uri} predates label counts: fake labels come from each real "
                     "batch; rebuild the set (python -m pipeline.dataset build) to draw them from the whole set")
    return lines


def done_lines(cfg: TrainConfig, metrics: dict | None, wall: float, last: str | None, argv: list[str]) -> list[str]:
    """The summary of a finished run. metrics: the last report; last: the latest checkpoint; argv: the command's
    flags (the "continue" command repeats them with a larger --kimg)."""
    metrics = metrics or {}
    kimg = metrics.get("kimg")
    lines = [f"\ndone in {wall / 60:.1f} min" + (f" at {kimg:g} kimg" if kimg is not None else ""),
             f"  latest checkpoint: {last}"]
    if last:
        lines.append(f"  fakes grid:        {last}/{GRID_FILE}")
    bad = int(metrics.get("corrupt_skipped") or 0)
    if bad:
        lines.append(f"  bad samples:       {bad} skipped, never decoded again (list: {last}/{CORRUPT_FILE})")
    if cfg.tracking.enabled:
        uri = cfg.tracking.uri
        lines.append(f"  MLflow:            {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    lines += progress_summary(run_dir(cfg))
    lines.append("next:")
    if last:
        lines.append(f"  python -m pipeline.generate --model {last} --seeds 0-7 --outdir outputs/fakes")
    again = [a for i, a in enumerate(argv)
             if not a.startswith("--kimg=") and a != "--kimg" and (i == 0 or argv[i - 1] != "--kimg")]
    again += ["--kimg", f"{cfg.schedule.kimg * 10:g}"]
    lines.append("  python -m pipeline.train " + shlex.join(again) + "   # continues this run to a larger --kimg")
    return lines


def progress_summary(directory: str) -> list[str]:
    """The summary's last lines: the quality metric at its first and last snapshot, and where progress.png is."""
    png, data = storage.join(directory, PROGRESS_FILE), storage.join(directory, HISTORY_FILE)
    if not storage.exists(png):
        return []
    lines = []
    if storage.exists(data):
        q = History(json.loads(storage.read_bytes(data))).quality()
        if q:
            lines.append(f"  quality (SWD):     {q[0][1]:.1f} at {q[0][0]:g} kimg -> {q[-1][1]:.1f} at {q[-1][0]:g} kimg  "
                         f"(x1e3 on fixed reals, lower is better; MLflow {QUALITY_KEY.replace('/', '.')})")
    return lines + [f"  progress picture:  {png}  (quality and losses vs kimg, latest fakes)"]
