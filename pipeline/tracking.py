"""MLflow tracking and model registry for training runs (rank 0 only).

- One MLflow run per training run, in an experiment named after the dataset (or `--experiment`).
  A resumed run continues the SAME MLflow run: its id is kept in every checkpoint (`trainer.extra`).
- Params: the whole resolved TrainConfig, flattened (`model.cbase`, `loss.gamma`, …), never credentials.
- Metrics every tick, with `step` = images shown to D (cur_nimg; kimg = step / 1000, also logged as `kimg`,
  since sub-kimg ticks of small runs would otherwise collapse onto one step).
- The shard set as the run's dataset input (name, URI, digest = the manifest's sha256, image count), and system
  metrics (`system/...`: CPU, memory, disk, network, GPU with nvidia-ml-py) sampled by MLflow's monitor.
- At every snapshot: the fakes grid as an MLflow image (key `fakes`, step = images shown) and as a plain artifact,
  progress.png, the config and the list of corrupt samples found so far, and the EMA generator as an MLflow 3
  LoggedModel of the run (pyfunc wrapper of our network file, see pipeline.pyfunc) linked to the snapshot's step and
  metrics, registered as a new version of NAME; the `champion` alias follows the best quality metric (lower is
  better). `latest` is MLflow's own `models:/NAME/latest`, and our tools
  also accept `models:/NAME@latest` for it (MLflow reserves `latest` as an alias name).
- Tracking never kills training: every call goes through a background queue that retries with backoff
  while the server is unreachable and catches up, in order, when it returns.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from pipeline import storage
from pipeline.data.errors import DataError
from pipeline.data.manifest import DatasetInfo, dataset_info
from pipeline.metrics.core import DATA_METRICS, LOWER_IS_BETTER, RealImages, compute_metrics
from pipeline.mlflow_store import tracking_uri  # public here too: pipeline.tracking.tracking_uri
from pipeline.training import checkpoint
from pipeline.training.callbacks import TrainCallbacks
from pipeline.training.progress import PROGRESS_FILE, QUALITY_KEY

log = logging.getLogger("stylegan3.tracking")

CHAMPION_ALIAS = "champion"
FAKES_KEY = "fakes"  # the MLflow image key of the fakes grids
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # MLflow's tag on a LoggedModel: the versions registered from it
DIGEST_CHARS = 32  # of the manifest's sha256 in the dataset input's digest (MLflow keeps at most 36 characters)
# Quality metrics that pick the champion, in order of preference; the last is the default quality curve's
# (pipeline.training.progress, every run unless --quality 0).
CHAMPION_METRICS = (*LOWER_IS_BETTER, QUALITY_KEY)
_SECRET_WORDS = ("secret", "password", "token", "access_key", "credential")


def _local_artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts go to `mlruns/` beside the database (not the caller's cwd)."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlruns")
    return None


def safe_params(flat: dict[str, Any]) -> dict[str, str]:
    """Params for MLflow: values stringified, anything that looks like a credential dropped."""
    out = {}
    for k, v in flat.items():
        if any(w in k.lower() for w in _SECRET_WORDS):
            continue
        text = "" if v is None else str(v)
        if "://" in text and "@" in text.split("://", 1)[1].split("/", 1)[0]:
            continue  # a URI with user:password@host
        out[k] = text[:6000]
    return out


def dataset_name(data_uri: str | None) -> str:
    """A short name for the dataset: the last path component of its URI, or 'emoji' for the demo set."""
    if not data_uri or data_uri.startswith("demo:"):
        return "emoji"
    name = data_uri.rstrip("/").rsplit("/", 1)[-1] or "data"
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


def default_model_name(cfg) -> str:
    """`stylegan3-<dataset>-<t|r>`."""
    return f"stylegan3-{dataset_name(cfg.data.uri)}-{cfg.model.preset.removeprefix('stylegan3-')}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


# ---------------------------------------------------------------------------------------------------


class ResilientQueue:
    """Runs MLflow calls in order on a background thread; retries each with backoff until it succeeds.

    A call that fails with a client error (bad value, already exists) is dropped with a warning, since
    retrying cannot help; any other failure (server down, timeouts, 5xx) is retried, and a warning says
    how many calls are waiting.
    """

    def __init__(self, max_backoff: float = 30.0, warn_every: float = 30.0):
        self._ops: deque[tuple[str, Callable[[], Any]]] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self.max_backoff = max_backoff
        self.warn_every = warn_every
        self.failures = 0  # consecutive failures of the call at the head
        self._thread = threading.Thread(target=self._run, name="mlflow-queue", daemon=True)
        self._thread.start()

    def submit(self, what: str, fn: Callable[[], Any]) -> None:
        with self._cv:
            self._ops.append((what, fn))
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._ops) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until every call went through (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._ops or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        done = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        return done

    def _run(self) -> None:
        last_warn = 0.0
        while True:
            with self._cv:
                while not self._ops and not self._closed:
                    self._cv.wait()
                if not self._ops:
                    return
                what, fn = self._ops[0]
                self._busy = True
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - tracking must never stop training
                if _is_client_error(exc):
                    log.warning("MLflow refused %s (%s); skipping it", what, exc)
                else:
                    self.failures += 1
                    now = time.monotonic()
                    if now - last_warn > self.warn_every or self.failures == 1:
                        last_warn = now
                        log.warning("MLflow unreachable while doing %s (%s: %s); training goes on, %d "
                                    "tracking call(s) waiting, retrying", what, type(exc).__name__,
                                    str(exc).splitlines()[0][:200] if str(exc) else "", self.pending)
                    with self._cv:
                        self._busy = False
                        self._cv.notify_all()
                    time.sleep(min(self.max_backoff, 0.5 * 2 ** min(self.failures, 8)))
                    continue
            with self._cv:
                if self.failures:
                    log.warning("MLflow reachable again; catching up (%d call(s) left)", len(self._ops) - 1)
                self.failures = 0
                self._ops.popleft()
                self._busy = False
                self._cv.notify_all()


def _is_client_error(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                                  "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE")
    return isinstance(exc, (ValueError, TypeError, KeyError))


# ---------------------------------------------------------------------------------------------------


class MlflowCallbacks(TrainCallbacks):
    """The training loop's tracking hook (pipeline.training.callbacks): runs, metrics, artifacts, registry."""

    _sysmon = None  # MLflow's system metrics monitor while the run is open (system_metrics_on())

    def __init__(self, cfg):
        """cfg: the resolved TrainConfig; its `tracking` section says where and how to log (TrackingConfig)."""
        # Our queue does the retrying; MLflow's own HTTP retries would hide an outage for minutes. MLflow's HTTP
        # client reads these from the environment only (no per-client setting); a value the user set wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        import mlflow

        self.cfg = cfg
        self.settings = t = cfg.tracking
        self.uri = t.uri or tracking_uri()
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.queue = ResilientQueue()
        self.run_id: str | None = None
        self.model_name = t.model_name or default_model_name(cfg)
        self.experiment = t.experiment or dataset_name(cfg.data.uri)
        self.best: tuple[str, float] | None = None  # (metric, value) of the champion so far
        self._staging = Path(tempfile.mkdtemp(prefix="sg3-mlflow-"))
        # Generated (and real) images per snapshot metric; the paper's 50k is far too slow on CPUs.
        self.metric_samples = t.metric_samples
        self._real = None  # the real images (uint8 NCHW), held in memory after the first snapshot

    # -- training hooks --------------------------------------------------------------------------
    def on_start(self, trainer, resumed: bool) -> None:
        run_id = trainer.extra.get("mlflow_run_id") if resumed else self._child_run()
        self.best = tuple(trainer.extra["mlflow_best"]) if trainer.extra.get("mlflow_best") else None
        if run_id:
            self.run_id = run_id
            self.queue.submit("reopening the run", lambda: self.client.update_run(run_id, status="RUNNING"))
            self.queue.submit("starting system metrics", lambda: self._start_system_metrics(resumed=True))
            log.info("MLflow: continuing run %s", run_id)
        else:
            self.queue.submit("creating the run", lambda: self._create_run(trainer))
            # Wait a little for the run id, so that the first checkpoint already carries it; an unreachable
            # server only delays this, training starts regardless.
            self.queue.flush(timeout=30)
        self._record_run_id(trainer)

    def on_tick(self, trainer, metrics: dict[str, Any]) -> None:
        self._log_metrics(metrics, int(trainer.cur_nimg))

    def on_snapshot(self, trainer, directory: str, metrics: dict[str, Any]) -> dict[str, float] | None:
        self._record_run_id(trainer)
        quality = self._compute_metrics(trainer, directory)
        all_metrics = {**metrics, **quality}
        snap = self._staging / f"snap-{int(trainer.cur_nimg):012d}"
        snap.mkdir(parents=True, exist_ok=True)
        for name in (checkpoint.GRID_FILE, checkpoint.NETWORK_FILE, checkpoint.CORRUPT_FILE, PROGRESS_FILE):
            if (Path(directory) / name).exists():
                shutil.copy2(Path(directory) / name, snap / name)
        (snap / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        kimg, nimg = trainer.cur_nimg / 1000, int(trainer.cur_nimg)
        self.queue.submit(f"snapshot artifacts at {kimg:g} kimg", lambda: self._log_snapshot(snap, kimg, nimg))
        # The model's metrics: this snapshot's quality metrics (the tick already logged the others). Those computed
        # here are logged once, with the model's id; the quality curve's value (logged by the tick) once more with it.
        linked = set(quality) | {k for k in CHAMPION_METRICS if k in all_metrics}
        if (snap / checkpoint.NETWORK_FILE).exists() and self.settings.register:
            self.queue.submit(f"registering the generator at {kimg:g} kimg",
                              lambda: self._register(snap, kimg, nimg, all_metrics, linked, trainer.extra))
        else:
            if quality:
                self._log_metrics(quality, nimg)
            self.queue.submit("removing the staged snapshot", lambda: shutil.rmtree(snap, ignore_errors=True))
        return quality or None

    def on_end(self, trainer) -> None:
        self.queue.submit("stopping system metrics", self._stop_system_metrics)
        self.queue.submit("closing the run", lambda: self.client.set_terminated(self.run_id, "FINISHED"))
        done = self.queue.close(timeout=float(os.environ.get("SG3_TRACKING_FLUSH_S", "300")))
        self._record_run_id(trainer)
        if not done:
            log.warning("MLflow: %d tracking call(s) could not be delivered before the end of training; "
                        "the checkpoints are complete and hold the run id", self.queue.pending)
        shutil.rmtree(self._staging, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------------
    def _child_run(self) -> str | None:
        """A child run (settings.parent_run_id) restarted before its first checkpoint (a sweep interrupted early)
        continues the run that has its parent and tags; None when there is none."""
        t = self.settings
        if not (t.parent_run_id and t.tags):
            return None
        query = " and ".join([f"tags.mlflow.parentRunId = '{t.parent_run_id}'"]
                             + [f"tags.`{k}` = '{v}'" for k, v in t.tags.items()])
        try:
            exp_id = self.client.get_run(t.parent_run_id).info.experiment_id
            found = self.client.search_runs([exp_id], query, max_results=1)
        except Exception as exc:  # noqa: BLE001 - tracking never stops training; a second child run at worst
            log.warning("MLflow: no lookup of the child run of %s (%s)", t.parent_run_id, exc)
            return None
        return found[0].info.run_id if found else None

    def _record_run_id(self, trainer) -> None:
        if self.run_id:
            trainer.extra["mlflow_run_id"] = self.run_id
        if self.best:
            trainer.extra["mlflow_best"] = list(self.best)

    def _create_run(self, trainer) -> None:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            root = _local_artifact_root(self.uri)
            exp_id = self.client.create_experiment(
                self.experiment, artifact_location=f"{root}/{self.experiment}" if root else None)
        else:
            exp_id = exp.experiment_id
        from importlib.metadata import PackageNotFoundError, version

        try:
            pkg = version("stylegan3-ray")
        except PackageNotFoundError:
            pkg = "unknown"
        import torch

        tags = {"stylegan3.package_version": pkg, "stylegan3.cfg": self.cfg.model.preset,
                "stylegan3.device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "stylegan3.dataset": self.cfg.data.uri or "demo:emoji",
                "mlflow.runName": self.cfg.run.run_name or "stylegan3"}
        if commit := git_commit():
            tags["mlflow.source.git.commit"] = commit
        if job := os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_SUBMISSION_ID"):
            tags["ray.job_id"] = job
        if sha := trainer.extra.get("dataset_manifest_sha256"):
            tags["stylegan3.dataset_manifest_sha256"] = sha
        tags.update(self.settings.tags)
        if self.settings.parent_run_id:
            tags["mlflow.parentRunId"] = self.settings.parent_run_id
        run = self.client.create_run(exp_id, tags=tags)
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in safe_params(self.cfg.flatten()).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        self.run_id = run.info.run_id
        log.info("MLflow: run %s in experiment %r at %s", self.run_id, self.experiment, self.uri)
        self._log_dataset()
        self._start_system_metrics(resumed=False)

    def _log_dataset(self) -> None:
        """The shard set as the run's dataset input; a set whose manifest cannot be read is left out (warning)."""
        uri = self.cfg.data.uri
        try:
            info = dataset_info(uri)
        except (DataError, OSError, KeyError, ValueError) as exc:
            log.warning("MLflow: the dataset input is not logged: cannot read the manifest of %s (%s)", uri, exc)
            return
        self.client.log_inputs(self.run_id, datasets=[dataset_input(info)])

    def _start_system_metrics(self, resumed: bool) -> None:
        if not system_metrics_on():
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._stop_system_metrics()
        self._sysmon = SystemMetricsMonitor(self.run_id, resume_logging=resumed, tracking_uri=self.uri)
        self._sysmon.start()

    def _stop_system_metrics(self) -> None:
        if self._sysmon is not None:
            self._sysmon.finish()  # one last sample's worth, flushed; never raises
            self._sysmon = None

    def _log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k.replace("/", "."), float(v), ts, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and v == v]
        if batch:
            self.queue.submit(f"metrics at step {step}", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def _log_snapshot(self, snap: Path, kimg: float, nimg: int) -> None:
        if (snap / checkpoint.GRID_FILE).exists():
            # The UI's image view, by step (= images shown, the metrics' step); the plain file stays browsable.
            from PIL import Image

            with Image.open(snap / checkpoint.GRID_FILE) as grid:
                self.client.log_image(self.run_id, grid.copy(), key=FAKES_KEY, step=nimg)
            self.client.log_artifact(self.run_id, str(snap / checkpoint.GRID_FILE), f"grids/{kimg:09.3f}kimg")
        self.client.log_artifact(self.run_id, str(snap / "config.json"))
        if (snap / PROGRESS_FILE).exists():  # quality and losses vs kimg with the latest grid (replaced)
            self.client.log_artifact(self.run_id, str(snap / PROGRESS_FILE))
        if (snap / checkpoint.CORRUPT_FILE).exists():  # the run's distinct corrupt samples so far (replaced)
            self.client.log_artifact(self.run_id, str(snap / checkpoint.CORRUPT_FILE))

    def _register(self, snap: Path, kimg: float, nimg: int, metrics: dict[str, Any], linked: set[str],
                  extra: dict) -> None:
        sha = extra.get("dataset_manifest_sha256")
        version = register_generator(self.client, self.run_id, snap / checkpoint.NETWORK_FILE, self.model_name,
                                     kimg=kimg, metrics=metrics, linked=linked,
                                     manifest_sha256=sha, step=nimg, uri=self.uri,
                                     dataset=(dataset_name(self.cfg.data.uri), sha[:DIGEST_CHARS]) if sha else None)
        quality = next(((m, float(metrics[m])) for m in CHAMPION_METRICS if m in metrics), None)
        if quality and (self.best is None or (quality[0] == self.best[0] and quality[1] < self.best[1])):
            self.best = quality
            self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)
        shutil.rmtree(snap, ignore_errors=True)

    def _compute_metrics(self, trainer, directory: str) -> dict[str, float]:
        """The quality/equivariance metrics of `--metrics` on G_ema; they join the tick's report and meta.json."""
        names = list(self.cfg.run.metrics)
        if not names:
            return {}
        import torch

        if self._real is None and self.settings.reals_uri and any(n in DATA_METRICS for n in names):
            # The real images a sweep's driver read once for all its trials: no data pipeline per trial.
            data = storage.read_bytes(self.settings.reals_uri)
            self._real = torch.load(io.BytesIO(data), weights_only=True)[: self.metric_samples]
        if self._real is None and any(n in DATA_METRICS for n in names):
            # Read the reals once per run and keep them: every snapshot compares against the same images.
            real = RealImages.from_uri(self.cfg.data.uri)
            batches, n = [], 0
            for batch in real.open():
                batches.append(batch)
                n += len(batch)
                if n >= self.metric_samples:
                    break
            self._real = torch.cat(batches)[: self.metric_samples]
        values = compute_metrics(trainer.G_ema, names, num_samples=self.metric_samples, real=self._real,
                                 log=lambda line: log.info("metrics: %s", line))
        return {k: float(v) for k, v in values.items() if v is not None}


def make_callbacks(cfg) -> MlflowCallbacks:
    """The tracking hook the training loop builds on rank 0 when cfg.tracking.enabled."""
    return MlflowCallbacks(cfg)


# ---------------------------------------------------------------------------------------------------


def register_generator(client, run_id: str, network_file: str | os.PathLike, name: str, kimg: float,
                       metrics: dict[str, Any] | None = None, manifest_sha256: str | None = None,
                       step: int | None = None, uri: str | None = None, linked=None,
                       dataset: tuple[str, str] | None = None) -> str:
    """Log the network file as an MLflow 3 LoggedModel of the run and register it as a new version of `name`.

    The LoggedModel (`model_name_at(kimg)`) has the run as its source, the run's params, the metrics named in
    `linked` (default: all of `metrics`), logged to the run with its model_id at `step` (images shown; default
    kimg * 1000), and is one of the run's outputs at that step; the model version's source is `models:/<model_id>`.
    Returns the new version (as a string). The version's tags carry kimg, the dataset manifest hash and every
    metric. `uri`: the tracking URI of `client` (default: pipeline.mlflow_store.tracking_uri()). `dataset`: (name,
    digest) of the run's dataset input (dataset_input), which the linked metrics were measured on.
    """
    import mlflow  # here, like every MLflow import of this module: `import mlflow` takes seconds
    from mlflow.entities import LoggedModelOutput, Metric

    from pipeline.pyfunc import log_generator  # imports mlflow.pyfunc

    uri = uri or tracking_uri()
    step = int(round(kimg * 1000)) if step is None else int(step)
    run = client.get_run(run_id)
    tags = {"kimg": f"{kimg:g}"}
    if manifest_sha256:
        tags["dataset_manifest_sha256"] = manifest_sha256
    values = {k.replace("/", "."): float(v) for k, v in (metrics or {}).items()
              if isinstance(v, (int, float)) and v == v}
    # A retried call (the server went away part-way) finishes the LoggedModel it began instead of making another.
    begun = [m for m in client.search_logged_models(
                 [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{model_name_at(kimg)}'")
             if MODEL_VERSIONS_TAG not in m.tags]
    model = begun[0] if begun else client.create_logged_model(
        run.info.experiment_id, name=model_name_at(kimg), source_run_id=run_id, tags=tags,
        params=dict(run.data.params), model_type="stylegan3-generator")
    ts = int(time.time() * 1000)
    ds_name, ds_digest = dataset or (None, None)
    batch = [Metric(k, v, ts, step, model_id=model.model_id, dataset_name=ds_name, dataset_digest=ds_digest)
             for k, v in values.items() if linked is None or k in {m.replace("/", ".") for m in linked}]
    if batch and not model.metrics:
        client.log_batch(run_id, metrics=batch)
    if model.model_id not in {o.model_id for o in (run.outputs.model_outputs if run.outputs else [])}:
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    mlflow.set_tracking_uri(uri)  # log_model and register_model work through the fluent API's URIs
    mlflow.set_registry_uri(uri)
    if str(model.status) != "READY":
        log_generator(network_file, model.name, model.model_id,
                      metadata={"kimg": kimg, "dataset_manifest_sha256": manifest_sha256 or ""})
        if str(client.get_logged_model(model.model_id).status) != "READY":
            client.finalize_logged_model(model.model_id, "READY")
    for k, v in values.items():
        tags[f"metric.{k}"] = f"{v:.6g}"
    # register_model (not client.create_model_version) also tags the LoggedModel with its versions
    # (`mlflow.modelVersions`), which the model page shows. The version's source is `models:/<model_id>`.
    mv = mlflow.register_model(f"models:/{model.model_id}", name, tags=tags)
    return str(mv.version)


# ---------------------------------------------------------------------------------------------------


def model_name_at(kimg: float) -> str:
    """The LoggedModel name of a snapshot: `generator-6kimg`, `generator-0_2kimg` (MLflow allows no '.')."""
    return f"generator-{kimg:g}kimg".replace(".", "_")


def system_metrics_on() -> bool:
    """System metrics for training runs: on unless MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING is false (MLflow's own
    switch); the sampling interval is MLflow's MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (default 10 s)."""
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").strip().lower() not in ("false", "0", "no")


def dataset_input(info: DatasetInfo):
    """The MLflow dataset input of a shard set: name, source URI, digest (the first 32 hex digits of the
    manifest's sha256: MLflow keeps at most 36 characters), and a profile with the image count, resolution,
    channels, labels, shard count and the whole sha256."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    profile = {"num_images": info.num_images, "resolution": info.resolution, "channels": info.channels,
               "labels": info.label_kind, "shards": len(info.shards), "manifest_sha256": info.manifest_sha256}
    ds = Dataset(name=dataset_name(info.uri), digest=info.manifest_sha256[:DIGEST_CHARS],
                 source_type="s3" if info.uri.startswith("s3://") else "local",
                 source=json.dumps({"uri": info.uri}), profile=json.dumps(profile))
    return DatasetInput(ds, tags=[InputTag("mlflow.data.context", "training")])
