"""TrainConfig and the `python -m pipeline.train` flags: derived values, round trips, validation, the frozen
flag list (flags change only on purpose), all without a cluster."""

from __future__ import annotations

import json

import pytest

from pipeline.train import main, make_parser
from pipeline.training.embedded import DEMO_ARGS
from pipeline.training.flags import FLAG_FIELDS, config_from_args
from pipeline.training.config import ConfigError, TrainConfig

FLAGS = ["--aug", "--batch", "--batch-per-worker", "--cbase", "--cfg", "--cmax", "--cond", "--cpus-per-worker",
         "--data", "--dlr", "--experiment", "--fp32", "--freezed", "--gamma", "--glr", "--keep", "--kimg",
         "--map-depth", "--max-corrupt", "--max-failures",
         "--mbstd-group", "--metrics", "--mirror", "--model-name", "--p", "--quality", "--resume", "--run-name",
         "--seed", "--snap", "--storage", "--target", "--tick", "--tracking", "--use-gpu", "--workers"]


def test_flag_list_is_frozen_and_every_flag_is_explained():
    parser = make_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert sorted(a.option_strings[0] for a in actions) == FLAGS
    assert all(a.help and len(a.help) > 10 for a in actions)
    # Every flag sets one field of the config, and that field exists.
    assert sorted(FLAG_FIELDS) == FLAGS
    d = TrainConfig()
    assert all(hasattr(getattr(d, path.split(".")[0]), path.split(".")[1]) for path in FLAG_FIELDS.values())


def test_resolved_values_follow_the_official_train_py():
    cfg = TrainConfig().replace(schedule={"batch": 64}).resolved(resolution=256, img_channels=3, c_dim=0)
    assert cfg.optim.glr == 0.0025 and cfg.optim.dlr == 0.002
    assert cfg.schedule.ema_kimg == 20 and cfg.schedule.ema_rampup == 0.05  # batch·10/32
    assert cfg.loss.gamma == 2 and cfg.loss.blur_init_sigma == 0  # T: no blur
    assert cfg.aug.ada_kimg == 500 and cfg.forward_batch == 64
    r = TrainConfig().replace(model={"preset": "stylegan3-r"}).resolved(resolution=512)
    assert r.loss.blur_init_sigma == 10 and r.loss.blur_fade_kimg == 200 and r.loss.gamma == 8
    tuned = TrainConfig().replace(model={"preset": "stylegan3-r"}, run={"resume": "x.pkl"}).resolved(resolution=64)
    assert tuned.aug.ada_kimg == 100 and tuned.schedule.ema_rampup is None and tuned.loss.blur_init_sigma == 0


def test_round_trip_and_flatten():
    cfg = config_from_args(make_parser().parse_args(DEMO_ARGS + ["--data", "s3://b/d", "--metrics", "eqt,swd"]))
    cfg = cfg.resolved(resolution=32)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    flat = cfg.flatten()
    assert flat["model.cbase"] == 1024 and flat["run.metrics"] == "eqt,swd" and flat["data.uri"] == "s3://b/d"
    assert all("." in k for k in flat)
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_dict({"model": {"cbse": 1}})


@pytest.mark.parametrize("argv, message", [
    (["--data", "x", "--batch", "12", "--workers", "8"], "not divisible by --workers 8"),
    (["--data", "x", "--batch", "8", "--workers", "4"], "minibatch-std group 4"),
    (["--data", "x", "--batch", "32", "--batch-per-worker", "12"], "not divisible by --batch-per-worker 12"),
    (["--data", "x", "--p", "1.5", "--aug", "fixed"], "--p 1.5"),
])
def test_cli_refuses_bad_flags_with_one_sentence(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and err.count("\n") == 0


def test_missing_data_is_refused_before_cluster_work(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nothing")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_no_data_or_demo_data_means_the_bundled_set_under_the_users_flags():
    from pipeline.data.demo import DEMO_DATA
    from pipeline.training.embedded import DEMO_RUN_NAME, demo_argv, demo_run_name

    assert DEMO_DATA == "demo:emoji-faces" and demo_run_name(DEMO_DATA) == DEMO_RUN_NAME
    # Schedule-only flags: the embedded default's run, continued to another --kimg.
    a = make_parser().parse_args(demo_argv(["--kimg", "0.4"]))
    assert a.kimg == 0.4 and a.cbase == 1024 and a.run_name == DEMO_RUN_NAME
    a = make_parser().parse_args(demo_argv(["--data", "demo:emoji-faces", "--kimg=1"]))
    assert a.kimg == 1 and a.run_name == DEMO_RUN_NAME
    # The whole bundled set under the same settings: a run of its own.
    a = make_parser().parse_args(demo_argv(["--data", "demo:emoji", "--kimg=1"]))
    assert a.kimg == 1 and a.cbase == 1024 and a.run_name == "demo-emoji16-t"
    # A flag that changes the model: another trajectory, so the name is derived from the settings instead.
    a = make_parser().parse_args(demo_argv(["--cbase", "2048"]))
    assert a.cbase == 2048 and a.run_name is None
    assert make_parser().parse_args(demo_argv([])).run_name == DEMO_RUN_NAME
    assert demo_argv(["--data", "s3://b/d", "--kimg", "1"]) is None
    # The registered model is the one README's commands name.
    assert make_parser().parse_args(demo_argv([])).model_name == "stylegan3-emoji-t"
    assert make_parser().parse_args(demo_argv(["--cfg", "stylegan3-r"])).model_name == "stylegan3-emoji-r"


# The config dict as e9ee425 (before the renames) stored it in checkpoints (state.pt "config") and MLflow.
OLD_CONFIG = {
    "model": {"cfg": "stylegan3-r", "resolution": 16, "cbase": 1024, "cmax": 32, "map_depth": 2, "mbstd_group": 4,
              "img_channels": 3, "c_dim": 0, "z_dim": 512, "w_dim": 512, "fp32": False, "freezed": 0},
    "optim": {"glr": 0.0025, "dlr": 0.002, "beta1": 0.0, "beta2": 0.99, "eps": 1e-08, "d_reg_interval": 16},
    "loss": {"gamma": 0.0078125, "blur_init_sigma": 10.0, "blur_fade_kimg": 50.0},
    "aug": {"mode": "ada", "target": 0.6, "p": 0.2, "interval": 4, "ada_kimg": 500.0},
    "schedule": {"batch": 8, "batch_per_worker": 4, "kimg": 25000, "tick": 4, "snap": 50, "keep": 3,
                 "ema_kimg": 2.5, "ema_rampup": 0.05},
    "data": {"uri": "s3://bucket/faces", "mirror": False, "cond": False},
    "run": {"workers": 1, "cpus_per_worker": 0.5, "use_gpu": None, "storage": "outputs/runs", "run_name": None,
            "resume": None, "seed": 3, "max_failures": 3, "max_corrupt": 0.01, "metrics": [], "quality": True,
            "experiment": "faces", "model_name": "faces-r", "callbacks": "pipeline.tracking:make_callbacks"},
}


def test_configs_stored_by_earlier_versions_are_read_and_keep_their_run_name():
    from types import SimpleNamespace

    from pipeline.training.launch import default_run_name

    cfg = TrainConfig.from_dict(OLD_CONFIG)
    assert cfg.model.preset == "stylegan3-r" and cfg.schedule.forward_batch == 4 and cfg.forward_batch == 4
    assert cfg.run.seed == 3 and cfg.loss.gamma == 0.0078125
    assert cfg.tracking.enabled and cfg.tracking.experiment == "faces" and cfg.tracking.model_name == "faces-r"
    assert not TrainConfig.from_dict({**OLD_CONFIG, "run": {**OLD_CONFIG["run"], "callbacks": None}}).tracking.enabled
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # The derived run name (automatic resume) of the same settings is the one e9ee425 derived.
    info = SimpleNamespace(manifest_sha256="ab" * 32)
    assert default_run_name(cfg, info) == "stylegan3-r-16px-faces-b8-c6c5f4f9"
