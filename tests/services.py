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
    """A free TCP port on 127.0.0.1 that no other test server gets, held for the life of this process."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports, one block held for the life of this process (for servers started outside
    `start_with_retry`; prefer that with a `PortBlock`, which is given back when the server stops)."""
    block = reserve_ports(n)
    block.hold_until_exit()
    return [block[i] for i in range(n)]


# Port blocks. Every server the tests start takes its pinned ports (and a Ray head its worker port range) from a
# block of SLOT consecutive ports that
# - lies outside the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), so that no outgoing
#   connection of any process can take one of them between choice and bind, and outside Ray's default worker
#   range 10002-19999 used by `ray.init()` (ray_local);
# - is claimed with an exclusive flock on a file in LOCK_DIR, so that two servers -- of this test process or of
#   another one on the machine -- never get overlapping blocks; the lock is held until the server is stopped or
#   the process exits (the kernel drops it then, so a crashed run frees its blocks);
# - had every port bindable at claim time. A port taken by a foreign process after that is met by retrying the
#   start with a fresh block (`start_with_retry`).
SLOT = 256
RAY_DEFAULT_WORKER_PORTS = (10002, 19999)
LOCK_DIR = Path(tempfile.gettempdir()) / "stylegan3-ray-test-ports"
_HELD: list[PortBlock] = []  # blocks this process keeps until it exits (free_port, session-wide servers)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically assigned ports (both ends included)."""
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _slot_bases() -> list[int]:
    lo, hi = ephemeral_range()
    start = RAY_DEFAULT_WORKER_PORTS[1] + 1
    bases = [b for b in range(start, 65536 - SLOT, SLOT)
             if b + SLOT <= lo or b > hi]  # entirely outside the ephemeral range
    if not bases:
        raise RuntimeError(f"no port range outside the ephemeral range {lo}-{hi} and Ray's default worker "
                           "ports: widen the gap in /proc/sys/net/ipv4/ip_local_port_range")
    return bases


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class PortBlock:
    """Ports base .. base + size - 1, reserved for one server (see the comment above SLOT)."""

    base: int
    size: int
    _lock: object = field(repr=False, default=None)

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.size:
            raise IndexError(f"port {i} of a block of {self.size}")
        return self.base + i

    def range(self, first: int, count: int) -> tuple[int, int]:
        """(min, max) ports of `count` ports starting at offset `first` (a Ray worker port range)."""
        if first + count > self.size:
            raise IndexError(f"ports {first}..{first + count - 1} exceed a block of {self.size}")
        return self.base + first, self.base + first + count - 1

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops its flock
            self._lock = None
        if self in _HELD:
            _HELD.remove(self)

    def hold_until_exit(self) -> int:
        """Keep the block for the life of this process; returns its first port."""
        _HELD.append(self)
        return self.base


def reserve_ports(size: int = SLOT) -> PortBlock:
    """Claim a block of `size` (<= SLOT) free ports that no other server of any test process holds."""
    import fcntl
    import random

    if not 1 <= size <= SLOT:
        raise ValueError(f"a port block holds 1..{SLOT} ports, not {size}")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    bases = _slot_bases()
    random.shuffle(bases)
    for base in bases:
        fh = open(LOCK_DIR / f"{base}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        if all(_bindable(port) for port in range(base, base + size)):
            return PortBlock(base, size, fh)
        fh.close()
    raise RuntimeError(f"no free block of {size} ports in {len(bases)} candidates (locks in {LOCK_DIR})")


def start_with_retry(start, attempts: int = 3):
    """`start(block)` with a fresh PortBlock, again (up to `attempts` times) when the server fails to come up --
    e.g. a port of its block was taken by a foreign process after it was claimed. The block stays with the
    returned server (`server.info["ports"]`) and is released when it stops."""
    error: Exception | None = None
    for _ in range(attempts):
        block = reserve_ports()
        try:
            server = start(block)
        except RuntimeError as e:  # wait_until's "did not become ready", with the server's log tail
            block.release()
            error = e
            continue
        server.info["ports"] = block
        return server
    raise RuntimeError(f"server did not start in {attempts} attempts with fresh ports; last error: {error}")


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

    def release_ports(self) -> None:
        """Give the server's port block back (after `stop`, when it will not be restarted on the same ports)."""
        if "ports" in self.info:
            self.info.pop("ports").release()


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


def start_seaweedfs(workdir: Path, ports: PortBlock | None = None) -> Server:
    """`weed server` with master, volume, filer and S3 gateway on loopback (flags: docs/platform.md "SeaweedFS (S3)"). The S3 gateway
    listens on `ports[0]`; with `ports` given (a restart on the same ports) it is tried there up to 3 times, else
    on fresh blocks (`start_with_retry`)."""
    if ports is None:
        return start_with_retry(lambda block: _start_seaweedfs(workdir, block))
    error: Exception | None = None
    for attempt in range(3):
        try:
            server = _start_seaweedfs(workdir, ports)
            server.info["ports"] = ports
            return server
        except RuntimeError as e:  # a port still held by a dying predecessor: wait and try again
            error = e
            time.sleep(2 + 3 * attempt)
    raise RuntimeError(f"SeaweedFS did not start on ports {ports.base}..: {error}")


def _start_seaweedfs(workdir: Path, block: PortBlock) -> Server:
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    # The S3 gateway first: clients know it as the block's base port.
    p = [block[1], block[2], block[3], block[4], block[5], block[6], block[0], block[7]]
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
        try:
            client.create_bucket(Bucket="readiness-probe")
        except client.exceptions.BucketAlreadyOwnedByYou:  # a restart: the data, bucket included, survives
            pass
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


def start_mlflow_server(workdir: Path, s3: S3Info, bucket: str, ports: PortBlock | None = None) -> Server:
    """`mlflow server` with a sqlite backend and artifacts proxied to `s3://bucket/artifacts`, on `ports[0]`
    (a restart on the same port), else on a fresh block with retries."""
    if ports is None:
        return start_with_retry(lambda block: _start_mlflow_server(workdir, s3, bucket, block[0]))
    server = _start_mlflow_server(workdir, s3, bucket, ports[0])
    server.info["ports"] = ports
    return server


def _start_mlflow_server(workdir: Path, s3: S3Info, bucket: str, port: int) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
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
    """Environment every Ray process in the tests needs on these machines (docs/platform.md "Ray")."""
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep every daemon on 127.0.0.1
        "RAY_AUTH_MODE": "disabled",  # else a local ray.init() turns token auth on for later heads
        "RAY_TMPDIR": str(tmpdir),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


RAY_HEAD_PORTS = 16  # pinned ports of a Ray head; its worker port range follows them in the block
RAY_WORKER_PORTS = 200


def ray_port_flags(block: PortBlock) -> list[str]:
    """`ray start --head` flags pinning every port Ray opens to `block`: ten named ports, then the worker range."""
    lo, hi = block.range(RAY_HEAD_PORTS, RAY_WORKER_PORTS)
    return [
        f"--port={block[0]}", f"--dashboard-port={block[1]}", f"--node-manager-port={block[2]}",
        f"--object-manager-port={block[3]}", f"--ray-client-server-port={block[4]}",
        f"--dashboard-agent-listen-port={block[5]}", f"--dashboard-agent-grpc-port={block[6]}",
        f"--runtime-env-agent-port={block[7]}", f"--metrics-export-port={block[8]}",
        f"--min-worker-port={lo}", f"--max-worker-port={hi}",
    ]


def start_ray_head(workdir: Path, num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Server:
    """`ray start --head --block` with a dashboard (job submission) and every port pinned to one PortBlock;
    retried on a fresh block when it does not come up."""
    return start_with_retry(lambda block: _start_ray_head(workdir, block, num_cpus, extra_env))


def _start_ray_head(workdir: Path, block: PortBlock, num_cpus: int, extra_env: dict[str, str] | None) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes: Ray's session dir must live under a short path.
    temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    p = [block[0], block[1]]
    env = {**os.environ, **ray_env(temp_dir), **(extra_env or {})}
    cmd = [
        venv_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", *ray_port_flags(block),
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
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return server


def stop_ray_head(server: Server) -> None:
    server.stop(grace=8)
    server.release_ports()
    shutil.rmtree(server.info["temp_dir"], ignore_errors=True)
