"""MLflow tracking + registry + generation + serving, against a real sqlite store and a real `mlflow server`.

The training loop is represented by the object it hands to its callbacks (G/G_ema, cur_nimg, extra, cfg):
these tests drive the hooks directly, in the order the loop calls them; the training tests cover the loop
calling them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import models
from pipeline import tracking
from pipeline.training import checkpoint
from pipeline.training.config import TrainConfig

RES = 16


@pytest.fixture(scope="module")
def tiny_G():
    torch.manual_seed(0)
    G, D = models.build("stylegan3-t", RES, channel_base=256, channel_max=16)
    return G.eval(), D.eval()


def _cfg(name: str, metrics=(), data_uri: str = "/data/faces") -> TrainConfig:
    return TrainConfig().replace(model={"preset": "stylegan3-t", "resolution": RES, "cbase": 256, "cmax": 16},
                                 data={"uri": data_uri}, schedule={"batch": 4, "kimg": 1},
                                 run={"run_name": name, "metrics": tuple(metrics)},
                                 tracking={"enabled": True, "model_name": name, "experiment": f"exp-{name}"})


def _snapshot_dir(tmp: Path, G, D, nimg: int) -> Path:
    d = tmp / f"ckpt-{nimg}"
    d.mkdir()
    models.save_network(d / checkpoint.NETWORK_FILE, G=G, D=D, G_ema=G)
    grid = np.full((RES, RES * 2, 3), nimg % 255, dtype=np.uint8)
    from pipeline.pixels import save_png

    save_png(grid, d / checkpoint.GRID_FILE)
    checkpoint.write_corrupt(d, [{"shard": "s/train-000000.tar", "key": "00000003", "reason": "zeroed"}])
    return d


def _drive(cb, trainer, tmp: Path, G, D, ticks: list[int], snap_every: int, quality=None):
    for i, nimg in enumerate(ticks):
        trainer.cur_nimg = nimg
        cb.on_tick(trainer, {"loss/G": 1.0 + i, "loss/D": 0.5, "kimg": nimg / 1000})
        if (i + 1) % snap_every == 0:
            if quality is not None:
                cb._compute_metrics = lambda *_a, _q=quality[i]: {"swd": _q}  # stand-in for pipeline.metrics
            cb.on_snapshot(trainer, str(_snapshot_dir(tmp, G, D, nimg)), {"kimg": nimg / 1000})


def _image_steps(client, run_id: str, key: str) -> list[int]:
    """The steps of the images logged under `key` (MLflow names them images/KEY+step+N+timestamp+T+UUID.png)."""
    names = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "images")]
    return sorted(int(n.split("+")[2]) for n in names if n.startswith(f"{key}+step+") and n.endswith(".png"))


def test_run_params_metrics_registry_champion_and_resume(tmp_path, monkeypatch, tiny_G):
    G, D = tiny_G
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # samples within this short test
    from pipeline.data.demo import ensure_demo_shards
    from pipeline.data.manifest import dataset_info

    data = ensure_demo_shards(tmp_path / "data", RES, max_images=8, progress=False)
    cfg = _cfg("track-a", data_uri=data)
    sha = dataset_info(data).manifest_sha256
    trainer = SimpleNamespace(G=G, G_ema=G, D=D, cfg=cfg, cur_nimg=0, extra={"dataset_manifest_sha256": sha})
    cb = tracking.make_callbacks(cfg)
    cb.on_start(trainer, resumed=False)
    # swd at the two snapshots: 0.5 then 0.8 -> champion stays on the first version.
    _drive(cb, trainer, tmp_path, G, D, [100, 200, 300, 400], snap_every=2, quality={1: 0.5, 3: 0.8})
    cb.on_end(trainer)
    run_id = trainer.extra["mlflow_run_id"]

    import mlflow

    client = mlflow.MlflowClient(uri, uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["schedule.batch"] == "4"
    assert run.data.params["model.cbase"] == "256"
    assert run.data.tags["stylegan3.dataset_manifest_sha256"] == sha
    hist = client.get_metric_history(run_id, "loss.G")
    assert [m.step for m in hist] == [100, 200, 300, 400]
    assert [m.value for m in hist] == [1.0, 2.0, 3.0, 4.0]
    arts = [a.path for a in client.list_artifacts(run_id)]
    assert "config.json" in arts and "grids" in arts
    versions = sorted(client.search_model_versions("name='track-a'"), key=lambda v: int(v.version))
    assert [v.tags["kimg"] for v in versions] == ["0.2", "0.4"]
    assert versions[0].tags["metric.swd"] == "0.5"
    assert versions[0].tags["dataset_manifest_sha256"] == sha
    assert str(client.get_model_version_by_alias("track-a", "champion").version) == "1"
    assert trainer.extra["mlflow_best"] == ["swd", 0.5]

    # MLflow 3 models: one LoggedModel per snapshot, made by this run, holding the snapshot's metrics at its step,
    # and an output of the run at that step; each model version points at its LoggedModel.
    logged = {m.name: m for m in client.search_logged_models([run.info.experiment_id])}
    assert set(logged) == {"generator-0_2kimg", "generator-0_4kimg"}
    first = logged["generator-0_2kimg"]
    assert first.source_run_id == run_id and first.status == "READY"
    assert [(m.key, m.value, m.step, m.dataset_name, m.dataset_digest) for m in first.metrics] == [
        ("swd", 0.5, 200, Path(data).name, sha[:32])]  # measured on the run's dataset input (below)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "swd")] == [(200, 0.5), (400, 0.8)]
    assert first.params["schedule.batch"] == "4"
    assert {o.model_id: o.step for o in run.outputs.model_outputs} == {
        first.model_id: 200, logged["generator-0_4kimg"].model_id: 400}
    # MLflow 3.17's SQL registry keeps no model_id column (ModelVersion.model_id reads None from it): the link is
    # the version's source, models:/<model_id>, and the LoggedModel's mlflow.modelVersions tag.
    assert versions[0].source == f"models:/{first.model_id}"
    assert json.loads(first.tags["mlflow.modelVersions"]) == [{"name": "track-a", "version": 1}]
    # The fakes grids in the image view, by step (images shown); system metrics; the shard set as dataset input.
    assert _image_steps(client, run_id, tracking.FAKES_KEY) == [200, 400]
    assert any(k.startswith("system/cpu") for k in run.data.metrics), sorted(run.data.metrics)
    info = dataset_info(data)
    (ds,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert (ds.name, ds.digest, json.loads(ds.source)["uri"]) == (
        Path(data).name, info.manifest_sha256[:32], data)
    profile = json.loads(ds.profile)
    assert profile["num_images"] == info.num_images == 8 and profile["manifest_sha256"] == info.manifest_sha256

    # Resume: a new callbacks object given the checkpoint's `extra` continues the same run.
    trainer2 = SimpleNamespace(G=G, G_ema=G, D=D, cfg=cfg, cur_nimg=400, extra=dict(trainer.extra))
    cb2 = tracking.make_callbacks(cfg)
    cb2.on_start(trainer2, resumed=True)
    _drive(cb2, trainer2, tmp_path, G, D, [500, 600], snap_every=2, quality={1: 0.3})
    cb2.on_end(trainer2)
    assert trainer2.extra["mlflow_run_id"] == run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss.G")] == [100, 200, 300, 400, 500, 600]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert str(client.get_model_version_by_alias("track-a", "champion").version) == "3"
    assert _image_steps(client, run_id, tracking.FAKES_KEY) == [200, 400, 600]
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 1  # the same set, logged once

    # The registry CLI sees it; @latest resolves to the newest version.
    out = subprocess.run([sys.executable, "-m", "pipeline.registry", "show", "track-a@latest"],
                         capture_output=True, text=True, env={**__import__("os").environ}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "track-a v3" in out.stdout and "champion" in out.stdout
    v3 = client.get_model_version("track-a", "3")
    assert f"logged model: {v3.source[len('models:/'):]}" in out.stdout


def test_generate_from_registry_is_deterministic_and_video_decodes(tmp_path, monkeypatch, tiny_G):
    G, D = tiny_G
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = _cfg("gen-b")
    trainer = SimpleNamespace(G=G, G_ema=G, D=D, cfg=cfg, cur_nimg=0, extra={})
    cb = tracking.make_callbacks(cfg)
    cb.on_start(trainer, resumed=False)
    _drive(cb, trainer, tmp_path, G, D, [100], snap_every=1, quality={0: 0.1})
    cb.on_end(trainer)

    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri}
    outs = []
    for k in range(2):  # two fresh processes: the same seeds give the same pixels
        out = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model", "models:/gen-b@champion",
                              "--seeds", "3-4", "--outdir", str(tmp_path / f"o{k}"), "--grid",
                              str(tmp_path / f"o{k}" / "grid.png")], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        outs.append(np.asarray(__import__("PIL.Image").Image.open(tmp_path / f"o{k}" / "seed0003.png")))
    assert outs[0].shape == (RES, RES, 3)
    np.testing.assert_array_equal(outs[0], outs[1])
    from pipeline.sampling import images_for_seeds

    np.testing.assert_array_equal(images_for_seeds(G, [3])[0].permute(1, 2, 0).numpy(), outs[0])

    out = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model", "models:/gen-b@latest",
                          "--video", "rotate", "--frames", "12", "--fps", "6", "--outdir", str(tmp_path / "v")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(tmp_path / "v" / "rotate-seed0.mp4"))
    frames = [f for f in reader]
    assert len(frames) == 12 and frames[0].shape[:2] == (RES, RES)

    bad = subprocess.run([sys.executable, "-m", "pipeline.generate", "--model", "models:/no-such-model@champion"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no-such-model" in bad.stderr


@pytest.mark.slow
def test_serve_endpoint(tmp_path, monkeypatch, tiny_G):
    from tests import services

    G, D = tiny_G
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    net = tmp_path / "net.safetensors"
    models.save_network(net, G=G, D=D, G_ema=G)
    import mlflow

    from pipeline import pyfunc

    client = mlflow.MlflowClient(uri, uri)
    exp = client.create_experiment("serve", artifact_location=str(tmp_path / "mlruns"))
    run = client.create_run(exp)
    # The tracking queue retries a registration that failed part-way (server gone while uploading the model): the
    # retry completes the LoggedModel it began, so the snapshot has one model, one output and one version.
    real = pyfunc.log_generator
    monkeypatch.setattr(pyfunc, "log_generator", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("gone")))
    with pytest.raises(ConnectionError):
        tracking.register_generator(client, run.info.run_id, net, "serve-c", kimg=1.0, metrics={"swd": 0.25})
    monkeypatch.setattr(pyfunc, "log_generator", real)
    assert tracking.register_generator(client, run.info.run_id, net, "serve-c", kimg=1.0, metrics={"swd": 0.25}) == "1"
    (model,) = client.search_logged_models([exp])
    assert model.status == "READY" and [(m.key, m.step) for m in model.metrics] == [("swd", 1000)]
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [model.model_id]
    assert [v.source for v in client.search_model_versions("name='serve-c'")] == [f"models:/{model.model_id}"]

    port = services.free_port()
    os_env = __import__("os").environ
    # mlflow execs `uvicorn` by name: the venv's bin/ must be on PATH even when it is not activated.
    env = {**os_env, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os_env['PATH']}"}
    proc = subprocess.Popen([services.venv_bin("mlflow"), "models", "serve", "-m", "models:/serve-c@latest",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def post(body: bytes):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        def ready():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                return r.status == 200

        services.wait_until(ready, 120, "mlflow models serve", tmp_path / "serve.log", proc)
        status, body = post(json.dumps({"dataframe_records": [{"seed": 5, "psi": 1.0}]}).encode())
        assert status == 200, body
        pred = json.loads(body)["predictions"][0]
        from pipeline.pyfunc import decode_png
        from pipeline.sampling import images_for_seeds

        np.testing.assert_array_equal(decode_png(pred["png"]), images_for_seeds(G, [5])[0].permute(1, 2, 0).numpy())
        status, body = post(json.dumps({"dataframe_records": [{"not_a_seed": 1}]}).encode())
        assert 400 <= status < 500, (status, body)
    finally:
        services.stop_tree(services.process_tree(proc.pid), grace=5)


@pytest.mark.slow
def test_tracking_survives_server_outage(tmp_path, monkeypatch, mlflow_server, tiny_G):
    """Stop the server mid-run: the hooks return at once, training goes on, and everything lands after
    the server is back."""
    G, D = tiny_G
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    cfg = _cfg("outage-d")
    trainer = SimpleNamespace(G=G, G_ema=G, D=D, cfg=cfg, cur_nimg=0, extra={})
    cb = tracking.make_callbacks(cfg)
    cb.queue.max_backoff = 2.0
    cb.on_start(trainer, resumed=False)
    _drive(cb, trainer, tmp_path, G, D, [100, 200], snap_every=2)
    assert cb.queue.flush(120)

    mlflow_server.stop()
    t0 = time.monotonic()
    _drive(cb, trainer, tmp_path, G, D, [300, 400], snap_every=2)
    assert time.monotonic() - t0 < 10, "hooks must not block while the server is down"
    time.sleep(3)
    assert cb.queue.pending > 0 and cb.queue.failures > 0
    mlflow_server.start()
    cb.on_end(trainer)
    assert cb.queue.pending == 0

    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url, mlflow_server.url)
    run_id = trainer.extra["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "loss.G")] == [100, 200, 300, 400]
    assert client.get_run(run_id).info.status == "FINISHED"
    versions = client.search_model_versions("name='outage-d'")
    assert sorted(v.tags["kimg"] for v in versions) == ["0.2", "0.4"]
    # Nothing logged during the outage is lost: every metric, both snapshots' grids, the corrupt-sample list.
    assert [m.step for m in client.get_metric_history(run_id, "loss.D")] == [100, 200, 300, 400]
    assert [m.step for m in client.get_metric_history(run_id, "kimg")] == [100, 200, 300, 400]
    assert sorted(a.path for a in client.list_artifacts(run_id, "grids")) == [
        "grids/00000.200kimg", "grids/00000.400kimg"]
    assert {"config.json", checkpoint.CORRUPT_FILE} <= {a.path for a in client.list_artifacts(run_id)}
    # The registered generator's files went through the server into the bucket.
    from pipeline import storage

    keys = storage.list_uris(f"s3://{mlflow_server.info['bucket']}/artifacts")
    assert any(k.endswith("network.safetensors") for k in keys)
