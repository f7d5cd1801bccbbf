"""The test services themselves: real S3, MLflow server and Ray head, and the storage helper on them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from pipeline import storage
from tests import services


def test_storage_parse_and_join(tmp_path):
    assert storage.parse("s3://bucket/a/b/").key == "a/b"
    assert storage.join("s3://bucket/a", "x.tar") == "s3://bucket/a/x.tar"
    assert storage.join("s3://bucket", "x.tar") == "s3://bucket/x.tar"
    assert storage.parse(f"file://{tmp_path}").path == str(tmp_path)
    assert storage.join(str(tmp_path), "x") == str(tmp_path / "x")
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.parse("s3:///key")
    with pytest.raises(storage.StorageError, match="unsupported URI scheme"):
        storage.parse("gs://bucket/key")


def test_local_roundtrip(tmp_path):
    uri = storage.join(str(tmp_path), "sub", "f.bin")
    storage.write_bytes(uri, b"hello")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"hello"
    assert storage.list_uris(str(tmp_path), suffix=".bin") == [uri]
    storage.delete(uri)
    assert not storage.exists(uri)


def test_s3_put_list_get_multipart_boto3(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "dir", "small.bin")
    storage.write_bytes(uri, b"abc")
    assert storage.exists(uri)
    assert not storage.exists(storage.join(s3_bucket, "dir", "missing.bin"))
    assert storage.read_bytes(uri) == b"abc"

    # 70 MiB crosses the 64 MiB multipart threshold of upload_file.
    big = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for _ in range(70):
            f.write(chunk)
    big_uri = storage.join(s3_bucket, "dir", "big.bin")
    storage.upload_file(big, big_uri)
    loc = storage.parse(big_uri)
    head = storage.boto3_client().head_object(Bucket=loc.bucket, Key=loc.key)
    assert head["ContentLength"] == 70 << 20
    assert "-" in head["ETag"], "a multipart upload's ETag carries the part count"
    back = tmp_path / "back.bin"
    storage.download_file(big_uri, back)
    assert back.read_bytes() == big.read_bytes()
    assert storage.list_uris(storage.join(s3_bucket, "dir")) == [big_uri, uri]


def test_s3_through_pyarrow(s3_bucket):
    fs, path = storage.pyarrow_fs(storage.join(s3_bucket, "pa"))
    with fs.open_output_stream(f"{path}/x.txt") as f:
        f.write(b"from pyarrow")
    assert storage.read_bytes(storage.join(s3_bucket, "pa", "x.txt")) == b"from pyarrow"
    infos = fs.get_file_info(__import__("pyarrow.fs").fs.FileSelector(path))
    assert [i.base_name for i in infos] == ["x.txt"]


def test_missing_credentials_is_one_clear_error(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(storage.StorageError, match="no AWS credentials"):
        storage.check_credentials("s3://bucket/x")
    storage.check_credentials(str(tmp_path))  # local paths need none


def test_mlflow_artifact_lands_in_bucket(mlflow_server, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.create_experiment(f"fixture-{time.time_ns()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "x", 1.5)
    art = tmp_path / "note.txt"
    art.write_text("artifact through the proxy")
    client.log_artifact(run.info.run_id, str(art))
    client.set_terminated(run.info.run_id)

    assert client.get_run(run.info.run_id).data.metrics["x"] == 1.5
    keys = storage.list_uris(f"s3://{mlflow_server.info['bucket']}/artifacts")
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys


def _wait_job(client, job_id, timeout=180):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status, client.get_job_info(job_id)
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still running after {timeout}s")


def test_ray_job_submit_success_and_failure(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    (tmp_path / "ok.py").write_text("import ray\nray.init()\nprint('sum', ray.get(ray.put(41)) + 1)\n")
    (tmp_path / "bad.py").write_text("import sys\nprint('failing on purpose')\nsys.exit(3)\n")
    client = JobSubmissionClient(ray_head.info["dashboard_url"])
    env = {"working_dir": str(tmp_path)}
    ok = client.submit_job(entrypoint=f"{sys.executable} ok.py", runtime_env=env)
    bad = client.submit_job(entrypoint=f"{sys.executable} bad.py", runtime_env=env)
    status, info = _wait_job(client, ok)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(ok)
    assert "sum 42" in client.get_job_logs(ok)
    status, info = _wait_job(client, bad)
    assert status == JobStatus.FAILED
    assert info.driver_exit_code == 3


def test_ray_local_runs_tasks(ray_local):
    @ray_local.remote(num_cpus=0.5)
    def square(x):
        return x * x

    assert ray_local.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]


def test_server_stop_leaves_no_process(tmp_path):
    """A server started and stopped by PID leaves none of its processes behind."""
    server = services.start_seaweedfs(tmp_path / "sw")
    tree = services.process_tree(server.proc.pid)
    assert tree and all(services.alive(p) for p in tree)
    server.stop(grace=3)
    assert not any(services.alive(p) for p in tree)
    server.release_ports()


def test_port_blocks_are_disjoint_and_outside_the_ephemeral_range():
    """Blocks of this process never overlap, lie outside the kernel's ephemeral range and Ray's default worker
    ports, and a block held here is never handed to another process."""
    import subprocess

    lo, hi = services.ephemeral_range()
    blocks = [services.reserve_ports() for _ in range(3)]
    try:
        spans = sorted((b.base, b.base + b.size - 1) for b in blocks)
        for first, last in spans:
            assert last < lo or first > hi, (first, last, lo, hi)
            assert first > services.RAY_DEFAULT_WORKER_PORTS[1]
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans
        # A Ray head's named ports and worker range, all inside its block and apart from each other.
        flags = dict(f[2:].split("=") for f in services.ray_port_flags(blocks[0]))
        named = {int(v) for k, v in flags.items() if not k.endswith("worker-port")}
        workers = range(int(flags["min-worker-port"]), int(flags["max-worker-port"]) + 1)
        assert len(named) == 9 and not named & set(workers)
        assert all(blocks[0].base <= p < blocks[0].base + blocks[0].size for p in named | set(workers))
        code = "from tests import services; b = services.reserve_ports(); print(b.base)"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parents[1])
        assert int(other.stdout) not in {b.base for b in blocks}
    finally:
        for b in blocks:
            b.release()


def test_start_with_retry_moves_to_fresh_ports_when_a_port_is_taken(tmp_path):
    """A port taken by a foreign process after its block was claimed: the start is retried on a new block."""
    import socket
    import subprocess
    import urllib.request

    squatters: list[socket.socket] = []
    tried: list[int] = []

    def start(block):
        tried.append(block[0])
        if len(tried) == 1:  # a foreign listener grabs the port between the claim and the server's bind
            s = socket.socket()
            s.bind(("127.0.0.1", block[0]))
            s.listen()
            squatters.append(s)
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(block[0]), "--bind", "127.0.0.1"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        server = services.Server("http", proc, tmp_path, tmp_path / "http.log")

        def ready():
            with urllib.request.urlopen(f"http://127.0.0.1:{block[0]}/", timeout=2) as r:
                return r.status == 200

        try:
            services.wait_until(ready, 20, "http.server", proc=proc)
        except Exception:
            server.stop(grace=1)
            raise
        return server

    server = services.start_with_retry(start)
    try:
        assert len(tried) == 2 and tried[0] != tried[1]
        assert server.info["ports"][0] == tried[1]
    finally:
        server.stop(grace=1)
        server.release_ports()
        for s in squatters:
            s.close()
