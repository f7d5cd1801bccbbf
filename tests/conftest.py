"""Session-scoped real services for the tests (DESIGN.md §5): S3 (SeaweedFS), MLflow server, Ray.

Fixtures:
- `s3_server`   a SeaweedFS S3 gateway on 127.0.0.1; AWS_* variables point every client at it.
- `s3_bucket`   a fresh, empty bucket per test: returns "s3://<name>".
- `s3_restart`  `.stop()` / `.start()` the S3 server on the same ports, data kept (storage-outage tests).
- `mlflow_server` an `mlflow server` (sqlite backend, artifacts in SeaweedFS); `.info["url"]`; `restart`able.
- `ray_local`   `ray.init(num_cpus=2)` in this process, with this machine's settings; one per test module.
- `ray_head`    `ray start --head` with a dashboard, for `ray job submit` tests; `.info["dashboard_url"]`; one
                per test module.
Every server is stopped by PID at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import services

# The environment every test process and every Ray worker started from it needs. Set at import time, so
# that Ray workers (which inherit the driver's environment) and MLflow see the same values.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="sg3-tests-"))
_RAY_TMP = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
# The S3 endpoint must be known now (for the environment); its port block is held for the whole session, so a
# restarted server comes back on the same ports.
_S3_PORTS = services.reserve_ports()
_S3_PORTS.hold_until_exit()
_S3 = services.S3Info(f"http://127.0.0.1:{_S3_PORTS[0]}", services.TEST_ACCESS_KEY, services.TEST_SECRET_KEY)
os.environ.update(services.ray_env(_RAY_TMP))
os.environ.update(_S3.env())
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("TQDM_DISABLE", "1")
# The embedded MLflow default writes ./mlflow.db; keep test runs from touching the checkout.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_DIR / 'mlflow-default.db'}")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_RAY_TMP, ignore_errors=True)
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def s3_server():
    handle = _S3Restartable(services.start_seaweedfs(_SESSION_DIR / "seaweedfs", ports=_S3_PORTS))
    _S3_HANDLE.append(handle)
    try:
        yield handle.server.info["s3"]
    finally:
        handle.server.stop(grace=5)


_S3_HANDLE: list = []


class _S3Restartable:
    """The session's SeaweedFS, stoppable and restartable on the same ports; its data survives (outage tests)."""

    def __init__(self, server: services.Server):
        self.server, self.down = server, False

    def stop(self) -> None:
        self.server.stop(grace=0)  # killed, as a crash would: seconds instead of SIGTERM's ~15 s
        self.down = True

    def start(self) -> None:
        self.server = services.start_seaweedfs(self.server.workdir, ports=_S3_PORTS)
        self.down = False


@pytest.fixture
def s3_restart(s3_server):
    """`.stop()` / `.start()` of the session's S3 server; a test that leaves it stopped gets it started again."""
    handle = _S3_HANDLE[0]
    yield handle
    if handle.down:
        handle.start()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    from pipeline import storage

    name = f"t-{uuid.uuid4().hex[:12]}"
    storage.boto3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def mlflow_server(s3_server):
    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    from pipeline import storage

    storage.boto3_client().create_bucket(Bucket=bucket)
    server = services.start_mlflow_server(_SESSION_DIR / "mlflow", s3_server, bucket)
    handle = _Restartable(server)
    try:
        yield handle
    finally:
        handle.server.stop(grace=5)
        handle.server.release_ports()


class _Restartable:
    """The MLflow server, stoppable and restartable on the same port (for outage tests)."""

    def __init__(self, server: services.Server):
        self.server = server
        self.info = server.info

    @property
    def url(self) -> str:
        return self.info["url"]

    def stop(self) -> None:
        self.server.stop(grace=5)

    def start(self) -> None:
        s3 = services.S3Info(os.environ["AWS_ENDPOINT_URL"], services.TEST_ACCESS_KEY, services.TEST_SECRET_KEY)
        self.server = services.start_mlflow_server(self.server.workdir, s3, self.info["bucket"],
                                                   ports=self.info["ports"])
        self.info = self.server.info


@pytest.fixture(scope="module")
def ray_local():
    """A fresh local Ray per test module: actors, placement groups or CPU reservations that one module's runs
    leave behind (a failed Train run, a stopped Tune trial) cannot starve the next module's."""
    import ray
    from ray._private.utils import get_ray_address_file, write_ray_address

    address_file = None
    dashboard = services.reserve_ports(1)
    if not ray.is_initialized():
        # The dashboard serves the state API that Ray Train's placement-group cleaner queries; without it the
        # CPU reservations of finished Train runs (e.g. stopped Tune trials) are never released.
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=dashboard[0], log_to_driver=False,
                 _temp_dir=str(_RAY_TMP), configure_logging=False)
        # That cleaner finds the cluster through RAY_ADDRESS or this file under RAY_TMPDIR (ours); with a
        # second Ray on the machine (ray_head) and neither, it fails ("Found multiple active Ray instances").
        address_file = Path(get_ray_address_file(None))  # $RAY_TMPDIR/ray/ray_current_cluster, as workers see it
        address_file.parent.mkdir(parents=True, exist_ok=True)
        write_ray_address(ray.get_runtime_context().gcs_address, None)
    try:
        yield ray
    finally:
        if address_file:
            address_file.unlink(missing_ok=True)  # else the next ray.init() would join this dead cluster
        ray.shutdown()
        dashboard.release()


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` for one test module (not longer: see ray_local)."""
    server = services.start_ray_head(_SESSION_DIR / "ray-head")
    try:
        yield server
    finally:
        services.stop_ray_head(server)
