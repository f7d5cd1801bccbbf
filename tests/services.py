"""Real local servers for the tests: SeaweedFS (S3), `mlflow server`, a Ray head.

Every server binds to 127.0.0.1 on free ports, writes its logs and state under its own temporary
directory, and is stopped by PID: its whole process tree gets SIGTERM, then SIGKILL after a grace
period. Nothing here stops processes by name (other Ray/MLflow processes may share the host).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Fixed test credentials: the S3 server is started with them and every client reads them.
TEST_ACCESS_KEY = "stylegan3-test-key"
TEST_SECRET_KEY = "stylegan3-test-secret"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def venv_bin(name: str) -> str:
    """Path of an executable installed beside this interpreter (the venv's bin/), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name!r} is not installed: pip install -e '.[test]'")
    return found


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) for every process, read from /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: the fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def process_tree(pid: int) -> list[int]:
    """`pid`, its descendants, and every process still in the session `pid` leads (servers are started
    with `start_new_session=True`, so a daemon that re-parented itself to init is still found)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        if p in out:
            continue
        out.append(p)
        stack.extend(children.get(p, []))
    out += [p for p, (_, sid) in table.items() if sid == pid and p not in out]
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_tree(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM every PID, wait up to `grace` seconds, SIGKILL the survivors and wait (up to `grace`) until they
    are gone."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # A killed process may take a moment to go (a large address space to tear down on a busy machine).
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)


def wait_until(check, timeout: float, what: str, log: Path | None = None, proc=None) -> None:
    """Poll `check()` until it returns truthy; raise with the server log's tail on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else "timed out"
    raise RuntimeError(f"{what} did not become ready ({state}). Log tail:\n{tail}")


@dataclass
class Server:
    """A started server process: its root PID, the tree we stop, its log and working directory."""

    name: str
    proc: subprocess.Popen
    workdir: Path
    log: Path
    info: dict = field(default_factory=dict)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None or alive(self.proc.pid):
            stop_tree(process_tree(self.proc.pid), grace)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str]) -> Server:
    log = workdir / f"{name}.log"
    fh = open(log, "ab")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    fh.close()
    return Server(name, proc, workdir, log)


# ---------------------------------------------------------------------------------------------------
# SeaweedFS (S3)


@dataclass
class S3Info:
    endpoint_url: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def start_seaweedfs(workdir: Path, s3_port: int | None = None) -> Server:
    """`weed server` with master, volume, filer and S3 gateway on loopback (PLATFORM.md flags)."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    p = free_ports(8)
    if s3_port is not None:
        p[6] = s3_port
    cmd = [
        venv_bin("weed"), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", "-master.telemetry=false",
        "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=64",
        f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}", "-volume.max=0", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
        "-s3", f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    info = S3Info(f"http://127.0.0.1:{p[6]}", TEST_ACCESS_KEY, TEST_SECRET_KEY)
    env = {**os.environ, **info.env()}
    server = _spawn("seaweedfs", cmd, workdir, env)
    server.info["s3"] = info

    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=info.endpoint_url, aws_access_key_id=info.access_key,
                          aws_secret_access_key=info.secret_key, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                        connect_timeout=2, read_timeout=5))

    def ready():
        # A bucket round trip proves master, volume, filer and gateway are all up.
        client.create_bucket(Bucket="readiness-probe")
        client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
        return client.get_object(Bucket="readiness-probe", Key="probe")["Body"].read() == b"ok"

    try:
        wait_until(ready, 60, "SeaweedFS", server.log, server.proc)
    except Exception:
        server.stop(grace=2)
        raise
    return server


# ---------------------------------------------------------------------------------------------------
# MLflow tracking server


def start_mlflow_server(workdir: Path, s3: S3Info, bucket: str, port: int | None = None) -> Server:
    """`mlflow server` with a sqlite backend and artifacts proxied to `s3://bucket/artifacts`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cmd = [
        venv_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/artifacts", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
    ]
    server = _spawn("mlflow", cmd, workdir, env)
    url = f"http://127.0.0.1:{port}"
    server.info.update(url=url, port=port, bucket=bucket, cmd=cmd, env=env)

    def ready():
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200

    try:
        wait_until(ready, 120, "mlflow server", server.log, server.proc)
    except Exception:
        server.stop(grace=2)
        raise
    return server


# ---------------------------------------------------------------------------------------------------
# Ray


def ray_env(tmpdir: Path) -> dict[str, str]:
    """Environment every Ray process in the tests needs on these machines (PLATFORM.md, "Ray")."""
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep every daemon on 127.0.0.1
        "RAY_AUTH_MODE": "disabled",  # else a local ray.init() turns token auth on for later heads
        "RAY_TMPDIR": str(tmpdir),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def start_ray_head(workdir: Path, num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Server:
    """`ray start --head --block` with a dashboard (job submission) and every port pinned."""
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes: Ray's session dir must live under a short path.
    temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    p = free_ports(10)
    env = {**os.environ, **ray_env(temp_dir), **(extra_env or {})}
    cmd = [
        venv_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={p[0]}", f"--dashboard-port={p[1]}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
        f"--node-manager-port={p[2]}", f"--object-manager-port={p[3]}", f"--ray-client-server-port={p[4]}",
        f"--dashboard-agent-listen-port={p[5]}", f"--dashboard-agent-grpc-port={p[6]}",
        f"--runtime-env-agent-port={p[7]}", f"--metrics-export-port={p[8]}",
        f"--min-worker-port={20000 + (p[9] % 20000)}", f"--max-worker-port={20000 + (p[9] % 20000) + 199}",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    server = _spawn("ray-head", cmd, workdir, env)
    dashboard = f"http://127.0.0.1:{p[1]}"
    server.info.update(address=f"127.0.0.1:{p[0]}", dashboard_url=dashboard, temp_dir=temp_dir, env=env)

    def ready():
        with urllib.request.urlopen(f"{dashboard}/api/version", timeout=2) as r:
            return r.status == 200

    try:
        wait_until(ready, 90, "ray head", server.log, server.proc)
    except Exception:
        server.stop(grace=2)
        raise
    return server


def stop_ray_head(server: Server) -> None:
    server.stop(grace=8)
    shutil.rmtree(server.info["temp_dir"], ignore_errors=True)
