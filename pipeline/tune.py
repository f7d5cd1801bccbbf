"""Hyper-parameter sweeps over R1 gamma and the learning rates with Ray Tune: `python -m pipeline.tune`.

Each trial is an ordinary `pipeline.train` run (same config, same TorchTrainer, same loop) with its own gamma,
G and D learning rates, reporting the quality metric (default SWD, lower is better) at every snapshot; ASHA
stops the trials that fall behind. Rule of thumb being searched (docs/algorithm.md "Recommended settings"): gamma scales with resolution²,
2 at 256² — the default space is log-uniform from /8 to x8 around it.

    python -m pipeline.tune --data s3://bucket/ffhq256 --cfg stylegan3-t --num-samples 16 --kimg-per-trial 500 \\
        --batch 32 --workers-per-trial 1 --name ffhq256-gamma

Search-space strings (for --gamma, --glr, --dlr): `loguniform:LO:HI`, `uniform:LO:HI`, `choice:A,B,C`, or a
plain number (fixed). Every `pipeline.train` flag is accepted and fixes that setting for all trials.

Layout under --storage: NAME/tune/ (Ray Tune's experiment: rerunning the same command with the same --name
continues an interrupted sweep), NAME/trials/TRIAL_ID/ (each trial's checkpoints), NAME/results.csv,
NAME/results.txt and NAME/metric_vs_gamma.png. MLflow: one parent run for the sweep, one child run per trial
(tag mlflow.parentRunId; params, metrics per tick, tag stop_reason); at the end the best trial's generator is
registered and gets the `champion` alias.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.ray_session import init_ray, local_ray_env
from pipeline.training.config import ConfigError
from pipeline.training.flags import add_train_flags, config_from_args

# The sweep library (pipeline.tuning) loads Ray, torch and MLflow: it is imported inside the functions that need it,
# so that `--help` and a bad flag answer without those seconds of start-up.


def make_parser() -> argparse.ArgumentParser:
    """pipeline.train's flags (every one fixes that setting for all trials) plus the sweep's flags;
    --gamma/--glr/--dlr take search-space strings, --kimg/--workers are per trial."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.tune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sweep R1 gamma and the learning rates with Ray Tune (ASHA early stopping); every trial is a "
                    "pipeline.train run. Same --name + --storage = continue an interrupted sweep.",
        epilog=__doc__.split("\n", 2)[2])
    add_train_flags(p, skip={"--gamma", "--glr", "--dlr", "--kimg", "--workers", "--run-name"})
    p.set_defaults(storage="outputs/sweeps", snap=1)
    g = p.add_argument_group("sweep")
    g.add_argument("--name", help="sweep name under --storage; the same name continues an interrupted sweep "
                                  "(default: tune-<data>-<cfg>)")
    g.add_argument("--num-samples", type=int, default=8, help="number of trials (%(default)s)")
    g.add_argument("--gamma", help="R1 gamma space (default loguniform over /8..x8 of 2*(res/256)^2)")
    g.add_argument("--glr", help="G learning-rate space (default loguniform over /4..x4 of the preset's 0.0025)")
    g.add_argument("--dlr", help="D learning-rate space (default loguniform over /4..x4 of the preset's 0.002)")
    g.add_argument("--kimg-per-trial", "--kimg", dest="kimg", type=float, default=500,
                   help="train each trial for at most this many kimg (%(default)s)")
    g.add_argument("--workers-per-trial", "--workers", dest="workers", type=int, default=1,
                   help="Ray Train workers per trial (%(default)s)")
    g.add_argument("--max-concurrent", type=int, default=0,
                   help="trials running at once (0 = as many as the cluster holds)")
    g.add_argument("--metric", default="swd",
                   help="quality metric reported at every snapshot and optimised: swd (default), fid, kid "
                        "(lower is better) or eqt, eqt_frac, eqr (dB, higher is better)")
    g.add_argument("--metric-samples", type=int, default=1000,
                   help="generated (and real) images per metric evaluation (%(default)s)")
    g.add_argument("--scheduler", default="asha", choices=("asha", "none"),
                   help="asha: stop trials that fall behind at each rung (default); none: run all to the end")
    g.add_argument("--grace-kimg", type=float,
                   help="ASHA: no trial is stopped before this many kimg (default: kimg-per-trial / 8, at least "
                        "one snapshot)")
    g.add_argument("--reduction-factor", type=float, default=3,
                   help="ASHA: keep the best 1/this of the trials at each rung (%(default)s)")
    return p


def plan(args: argparse.Namespace, argv: list[str] | None = None):
    """The checked Sweep of parsed flags (pipeline.tuning.sweep.plan_sweep): the training flags make the one
    TrainConfig of every trial (--gamma/--glr/--dlr are search spaces instead); the sweep flags its options."""
    from pipeline.tuning.space import TUNED
    from pipeline.tuning.sweep import SweepOptions, plan_sweep

    train = argparse.Namespace(**{**vars(args), **{k: None for k in TUNED}, "run_name": None})
    opts = SweepOptions(name=args.name, num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                        spaces={k: getattr(args, k) for k in TUNED if getattr(args, k) is not None},
                        metric=args.metric, metric_samples=args.metric_samples, scheduler=args.scheduler,
                        grace_kimg=args.grace_kimg, reduction_factor=args.reduction_factor)
    return plan_sweep(config_from_args(train), opts, argv)


def main(argv: list[str] | None = None, *, callbacks: list | None = None) -> int:
    """CLI entry point; returns 0 (sweep complete), 2 (bad arguments) or 3 (interrupted: run it again).
    callbacks: extra ray.tune.Callback objects (tests inject an interruption with one)."""
    argv = sys.argv[1:] if argv is None else argv
    local_ray_env()
    # Reports between snapshots carry no quality metric; ASHA skips them, Tune's strict check must too.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    args = make_parser().parse_args(argv)
    from pipeline.tuning.runner import run_sweep
    from pipeline.tuning.space import SpaceError

    try:
        sweep = plan(args, argv)
        init_ray(dashboard=True)
        summary = run_sweep(sweep, callbacks=callbacks)
    except (ConfigError, SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
