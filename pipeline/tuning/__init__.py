"""Hyper-parameter sweeps with Ray Tune, the library behind `python -m pipeline.tune` (docs/tuning.md).

- `space`: search-space strings, their Tune domains, the default spaces, a metric's direction;
- `sweep`: the checked plan of a sweep (`plan_sweep`), its fit to the cluster, each trial's TrainConfig;
- `trial`: the function Tune runs per trial (an ordinary training run);
- `runner`: the Tuner (new or restored), the sweep's end (`run_sweep`, `finish`);
- `results`: one row per trial, the table, CSV and plot;
- `promotion`: the sweep's MLflow parent run, the child runs' closing and the champion.
"""
