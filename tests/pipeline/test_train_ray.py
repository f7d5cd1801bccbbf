"""Training on a real local Ray cluster (ray_local) with real S3 storage (SeaweedFS): a 2-worker run with
checkpoints on S3, automatic resume with the same run name, recovery from a worker killed mid-run, and the
configuration errors that must stop a run before any cluster work. Tiny networks (16x16, 16 channels)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.training import checkpoint, progress
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.launch import fit, latest_checkpoint, prepare, run_dir
from tests.pipeline import train_record
from tests.pipeline.faults import ExitOnce

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_shards(session_dir):
    from pipeline.data import ensure_demo_shards

    return ensure_demo_shards(session_dir / "train-shards", 16, max_images=64, progress=False)


@pytest.fixture(scope="module")
def damaged_shards(tiny_shards, session_dir):
    """tiny_shards with one PNG zeroed in place (the tar intact): one bad sample of 64."""
    from tests.pipeline.test_data_reader import damaged_copy

    return damaged_copy(tiny_shards, session_dir / "train-shards-damaged", {0: [3]})


def tiny_config(data_uri: str, storage_uri: str, run_name: str, **sections) -> TrainConfig:
    base = TrainConfig().replace(
        model={"cbase": 256, "cmax": 16, "z_dim": 16, "w_dim": 16},
        loss={"gamma": 0.1},
        # p moves 0.08 per adjustment, after every step: the ADA state changes visibly within these short runs
        aug={"mode": "ada", "ada_kimg": 0.1, "interval": 1},
        schedule={"batch": 8, "kimg": 0.016, "tick": 0.008, "snap": 1, "keep": 2},
        data={"uri": data_uri},
        run={"workers": 2, "storage": storage_uri, "run_name": run_name, "max_failures": 0},
    )
    return base.replace(**sections)


def _close(a: dict, b: dict) -> None:
    assert a["cur_nimg"] == b["cur_nimg"] and a["batch_idx"] == b["batch_idx"] and a["cur_tick"] == b["cur_tick"]
    assert a["ada"] == b["ada"]
    for k in ("G_opt_moments", "D_opt_moments", "G_ema_sum", "G_ema_sq"):
        assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9), k


def test_two_workers_s3_checkpoints_then_automatic_resume(ray_local, damaged_shards, s3_bucket, tmp_path):
    record = tmp_path / "record.jsonl"
    recorder = train_record.Recorder.factory(record)
    cfg, info = prepare(tiny_config(damaged_shards, f"{s3_bucket}/runs", "two-workers", schedule={"kimg": 0.008}))
    assert cfg.worker_batch == 4 and cfg.model.resolution == 16

    result = fit(cfg, info, train_callbacks=[recorder], progress=False)
    assert result.error is None
    m = result.metrics
    assert m["kimg"] == pytest.approx(0.008) and m["tick"] == 1 and m["done"] is True
    for k in ("loss/G_loss", "loss/D_loss", "loss/r1_penalty", "loss/logits_real", "loss/signs_real"):
        assert math.isfinite(m[k]), k  # step 0 runs all three phases
    assert m["img_per_s"] > 0 and m["peak_mem_gb"] > 0
    assert m["corrupt_skipped"] == 1  # the one bad sample (the run's 64-image pass reads it once per pass)
    assert m["test_metric"] == 1.0  # on_snapshot's metrics reach the report
    assert m["quality/swd"] > 0 and m["quality/seconds"] > 0  # the default quality probe, at every snapshot

    # The snapshot is on S3 with the full layout.
    last = latest_checkpoint(cfg)
    assert last == storage.join(run_dir(cfg), checkpoint.dir_name(8))
    for name in (checkpoint.NETWORK_FILE, checkpoint.STATE_FILE, checkpoint.GRID_FILE, checkpoint.META_FILE,
                 checkpoint.CORRUPT_FILE, progress.PROGRESS_FILE):
        assert storage.exists(storage.join(last, name)), name
    # progress.png and its data beside the checkpoints, in the run directory on S3.
    assert storage.exists(storage.join(run_dir(cfg), progress.PROGRESS_FILE))
    rows = json.loads(storage.read_bytes(storage.join(run_dir(cfg), progress.HISTORY_FILE)))
    # The curve starts with the untrained generator (kimg 0), then one point per snapshot.
    assert [r["kimg"] for r in rows] == [0.0, 0.008] and rows[1]["quality/swd"] == pytest.approx(m["quality/swd"])
    (bad,) = json.loads(storage.read_bytes(storage.join(last, checkpoint.CORRUPT_FILE)))
    assert bad["shard"].endswith("train-000000.tar") and bad["key"] and bad["reason"]
    local = tmp_path / "ckpt"
    for name in (checkpoint.NETWORK_FILE, checkpoint.STATE_FILE):
        storage.download_file(storage.join(last, name), local / name)
    saved = train_record.checkpoint_summary(local, cfg)
    end = [r for r in train_record.read(record) if r["event"] == "end"][-1]
    _close(saved, end)  # the checkpoint is the state the run ended with
    assert saved["ada"]["step_idx"] == 1  # one ADA adjustment (after step 1), its direction from the real signs
    assert (saved["ada"]["p"] > 0) == (saved["ada"]["last_signs_mean"] > 0.6)
    assert saved["extra"]["dataset_manifest_sha256"] == info.manifest_sha256
    assert checkpoint.load_state(local)["extra"]["corrupt_samples"] == [bad]  # a resume starts from it

    # Same run name and storage, longer schedule: starts from the checkpoint, then goes on.
    cfg2, info2 = prepare(tiny_config(damaged_shards, f"{s3_bucket}/runs", "two-workers",
                                      schedule={"kimg": 0.016, "keep": 1}))
    result2 = fit(cfg2, info2, train_callbacks=[recorder], progress=False)
    assert result2.error is None
    starts = [r for r in train_record.read(record) if r["event"] == "start"]
    assert [s["resumed"] for s in starts] == [False, True]
    _close(starts[1], saved)
    assert result2.metrics["kimg"] == pytest.approx(0.016) and result2.metrics["tick"] == 2
    assert result2.metrics["corrupt_skipped"] == 1  # the same sample, not counted again after the resume
    rows = json.loads(storage.read_bytes(storage.join(run_dir(cfg), progress.HISTORY_FILE)))
    assert [r["kimg"] for r in rows] == [0.0, 0.008, 0.016]  # the curve continues across the resume
    assert all(r["quality/swd"] > 0 for r in rows)
    final = train_record.read(record)[-1]
    assert final["cur_nimg"] == 16 and final["batch_idx"] == 2 and final["G_ema_sum"] != saved["G_ema_sum"]
    # keep 1: only the newest checkpoint is left.
    ckpts = sorted({u.rsplit("/", 2)[-2] for u in storage.list_uris(run_dir(cfg), suffix=checkpoint.STATE_FILE)})
    assert ckpts == [checkpoint.dir_name(16)]


def test_worker_killed_mid_run_is_restarted_from_last_checkpoint(ray_local, tiny_shards, tmp_path):
    record, marker = tmp_path / "record.jsonl", tmp_path / "fault-done"
    cfg, info = prepare(tiny_config(tiny_shards, str(tmp_path / "runs"), "fault", run={"max_failures": 1},
                                    schedule={"kimg": 0.024}))
    # Rank 1 exits abruptly after the second step (one step after the first checkpoint, at 8 images), once.
    result = fit(cfg, info, train_callbacks=[train_record.Recorder.factory(record)], progress=False,
                 step_hooks=[ExitOnce(rank=1, nimg=16, marker=str(marker))])
    assert marker.exists(), "the fault was not injected"
    assert result.error is None
    assert result.metrics["kimg"] == pytest.approx(0.024)
    starts = [r for r in train_record.read(record) if r["event"] == "start"]
    assert [(s["resumed"], s["cur_nimg"]) for s in starts] == [(False, 0), (True, 8)]
    assert train_record.read(record)[-1]["cur_nimg"] == 24


def test_bad_configurations_stop_before_cluster_work(tiny_shards, tmp_path):
    def err(**sections):
        with pytest.raises(ConfigError) as e:
            prepare(tiny_config(tiny_shards, str(tmp_path), "bad", **sections))
        return str(e.value)

    assert "not divisible by --workers" in err(schedule={"batch": 9})
    assert "minibatch-std group 4" in err(schedule={"batch": 4})  # 2 workers x 2 images
    assert "resolution 16x16" in err(model={"resolution": 32})
    assert "unknown --cfg 'stylegan2'" in err(model={"preset": "stylegan2"})
    missing = str(tmp_path / "nowhere")
    assert missing in err(data={"uri": missing}) and "manifest.json" in err(data={"uri": missing})
    assert "--resume" in err(run={"resume": str(tmp_path / "no-such.safetensors")})
    assert not os.listdir(tmp_path) or Path(tmp_path).is_dir()
