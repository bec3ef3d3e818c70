#!/usr/bin/env bash
# Start, on this machine: a Ray head, one extra Ray worker node and an MLflow tracking server.
# Each runs in its own session (setsid): stop.sh stops each whole process group by its pid.
# Everything binds to 127.0.0.1 unless FLOWTOPO_HOST says otherwise. Stop with stop.sh.
#
# Environment (all optional):
#   FLOWTOPO_CLUSTER_DIR  state folder: pids, logs, env, MLflow store/artifacts (./flowtopo-cluster)
#   FLOWTOPO_HOST         address every service binds to (127.0.0.1)
#   RAY_PORT, DASHBOARD_PORT, MLFLOW_PORT   fixed ports (default: free ports)
#   HEAD_CPUS, WORKER_CPUS                  CPUs each Ray node offers (1 and 1)
#   MLFLOW_WORKERS        the tracking server's worker processes (this machine's CPUs, at most
#                         MLflow's default of 4: each imports MLflow, ~2 s of CPU, at every start)
#   DATABASE_URL          MLflow backend store, e.g. postgresql://user@host/db (sqlite otherwise;
#                         Postgres needs `pip install psycopg2-binary`)
# Ray runs with token authentication; the token is written to STATE/auth_token (mode 600).
#   MLFLOW_AUTH_ADMIN_PASSWORD  required: the server runs MLflow's basic-auth app
#                         (cluster/mlflow/basic_auth.ini); anonymous requests are refused.
# Usage: start.sh [--no-auth]   (--no-auth: an MLflow server anyone who reaches it can write,
#                                only ever on a loopback address you alone use)
set -euo pipefail
no_auth=0
for arg in "$@"; do
  case "$arg" in
    --no-auth) no_auth=1 ;;
    *) echo "start.sh: unknown argument '$arg' (usage: start.sh [--no-auth])" >&2; exit 2 ;;
  esac
done
if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ "$no_auth" = 0 ]; then
  echo "start.sh: MLFLOW_AUTH_ADMIN_PASSWORD is not set: refusing to start an MLflow server without authentication (set it, or pass --no-auth explicitly)" >&2
  exit 2
fi
if [ "$no_auth" = 1 ]; then
  echo "start.sh: WARNING: --no-auth: the MLflow server accepts anonymous reads and writes" >&2
fi
here="$(cd "$(dirname "$0")" && pwd)"
state="$(mkdir -p "${FLOWTOPO_CLUSTER_DIR:-$PWD/flowtopo-cluster}" && cd "${FLOWTOPO_CLUSTER_DIR:-$PWD/flowtopo-cluster}" && pwd)"
host="${FLOWTOPO_HOST:-127.0.0.1}"
py="${PYTHON:-python}"
for tool in ray mlflow "$py"; do
  command -v "$tool" >/dev/null || { echo "start.sh: '$tool' not on PATH (activate the venv with flowtopo installed)" >&2; exit 2; }
done
if [ -s "$state/pids" ]; then
  echo "start.sh: a cluster is already recorded in $state/pids; run stop.sh first" >&2; exit 2
fi
chmod 700 "$state"
mkdir -p "$state/logs" "$state/artifacts"
# Every port a service here listens on, chosen now: 16 distinct ports free on every interface,
# BELOW the kernel's ephemeral range. A port the kernel handed out (bind to port 0) and we let
# go could be handed to the next process asking for any port (another Ray starting beside this
# one took a node's port that way, and the node timed out starting); the kernel never hands
# out ports below that range by itself.
# (Ports the environment fixes are not chosen again.)
ports=($("$py" - ${RAY_PORT:-} ${DASHBOARD_PORT:-} ${MLFLOW_PORT:-} <<'PY'
import random, socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):  # not Linux: below 32768 is outside every default
    low = 32768
first, last = (max(1024, low - 12000), low - 1) if low > 2048 else (1024, 65535)
fixed = {int(p) for p in sys.argv[1:]}
chosen: set[int] = set()
while len(chosen) < 16:
    port = random.randint(first, last)
    if port in chosen or port in fixed:
        continue
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            continue
    chosen.add(port)
print(*chosen)
PY
))
[ "${#ports[@]}" = 16 ] || { echo "start.sh: could not find 16 free ports" >&2; exit 1; }
node_ports() {  # every port a Ray node opens (ports[$1] on), so two nodes share one machine
  local i="$1" name
  for name in dashboard-agent-listen-port dashboard-agent-grpc-port node-manager-port \
              object-manager-port metrics-export-port runtime-env-agent-port; do
    printf -- "--%s=%s " "$name" "${ports[$i]}"
    i=$((i + 1))
  done
}
ray_port="${RAY_PORT:-${ports[0]}}"
dash_port="${DASHBOARD_PORT:-${ports[1]}}"
mlflow_port="${MLFLOW_PORT:-${ports[2]}}"
# Ray's socket paths are length-limited: keep its temp dir short and unique to this state dir.
temp="/tmp/ftc-$(printf '%s' "$state" | cksum | cut -d' ' -f1)"
: > "$state/pids"
# Ray token authentication, on for both nodes; the token lives in the state dir (mode 600).
if [ ! -s "$state/auth_token" ]; then
  (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32))' > "$state/auth_token")
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$state/auth_token"
# Ray's nodes, and every job and worker they start, never see a password: not the admin's, not
# the caller's. Jobs write to MLflow as the non-admin job user, whose credentials the nodes
# read from a 0600 file outside Ray's temp dir (flowtopo/mlflow_auth.py; made once MLflow is
# up). The file's path is all they are given.
job_credentials="$state/mlflow-job-credentials"
no_secrets=(env -u MLFLOW_AUTH_ADMIN_PASSWORD -u MLFLOW_TRACKING_PASSWORD -u MLFLOW_TRACKING_TOKEN
            -u MLFLOW_TRACKING_USERNAME)
if [ "$no_auth" = 0 ]; then no_secrets+=("FLOWTOPO_MLFLOW_CREDENTIALS=$job_credentials"); fi

# shellcheck disable=SC2046
setsid nohup "${no_secrets[@]}" ray start --head --block --port="$ray_port" --node-ip-address="$host" \
  --dashboard-host="$host" --dashboard-port="$dash_port" --temp-dir="$temp" \
  --ray-client-server-port="${ports[3]}" $(node_ports 4) \
  --num-cpus="${HEAD_CPUS:-1}" --disable-usage-stats >"$state/logs/ray-head.log" 2>&1 </dev/null &
echo "ray-head $!" >> "$state/pids"

"$py" - "$host:$ray_port" <<'PY' || { echo "start.sh: the Ray head did not come up (see $state/logs/ray-head.log)" >&2; "$here/stop.sh"; exit 1; }
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.time() + 120
while time.time() < deadline:
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(1)
PY

# shellcheck disable=SC2046
# The worker node gets its own temp dir: two nodes sharing one would also share (and garbage-
# collect) each other's runtime-env working dirs, pulling a job driver's cwd from under it.
setsid nohup "${no_secrets[@]}" ray start --block --address="$host:$ray_port" --node-ip-address="$host" \
  --temp-dir="${temp}w" $(node_ports 10) \
  --num-cpus="${WORKER_CPUS:-1}" --disable-usage-stats >"$state/logs/ray-worker.log" 2>&1 </dev/null &
echo "ray-worker $!" >> "$state/pids"

backend="${DATABASE_URL:-sqlite:///$state/mlflow.db}"
auth=()
if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  export MLFLOW_AUTH_CONFIG_PATH="$here/../mlflow/basic_auth.ini"
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then  # CSRF key, kept for restarts (mode 600)
    [ -s "$state/flask_secret" ] || (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32))' > "$state/flask_secret")
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$state/flask_secret")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  auth=(--app-name basic-auth)
fi
# no background job runner (MLflow's GenAI scoring jobs): not used here, and it forks a dozen
# worker processes
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
cd "$state"
cpus="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 4)"
setsid nohup mlflow server --host "$host" --port "$mlflow_port" \
  --workers "${MLFLOW_WORKERS:-$(( cpus < 4 ? cpus : 4 ))}" \
  --backend-store-uri "$backend" --artifacts-destination "$state/artifacts" --serve-artifacts \
  "${auth[@]}" >"$state/logs/mlflow.log" 2>&1 </dev/null &
echo "mlflow $!" >> "$state/pids"
cd - >/dev/null

cat > "$state/env" <<ENV
# source this file: flowtopo commands then find the cluster and the tracking server
export FLOWTOPO_RAY_ADDRESS=http://$host:$dash_port
export FLOWTOPO_RAY_GCS=$host:$ray_port
export MLFLOW_TRACKING_URI=http://$host:$mlflow_port
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$state/auth_token
ENV

mlflow_pid=$(awk '$1 == "mlflow" {print $2}' "$state/pids")
# exit 1: MLflow did not answer (its log's last error says why); 3: the Ray nodes did not join
"$py" - "$host" "$mlflow_port" "$host:$ray_port" "$mlflow_pid" <<'PY' || { rc=$?; if [ "$rc" = 3 ]; then echo "start.sh: the Ray worker node did not join the head: $(grep -E 'Error|Exception' "$state/logs/ray-worker.log" | tail -n 1) (logs in $state/logs)"; else echo "start.sh: services did not come up: $(grep -E 'Error|Exception' "$state/logs/mlflow.log" | tail -n 1) (logs in $state/logs)"; fi >&2; "$here/stop.sh" >/dev/null; exit 1; }
import os, subprocess, sys, time, urllib.error, urllib.request
host, port, gcs, pid = sys.argv[1:]
deadline = time.time() + 180
while time.time() < deadline:  # MLflow answers /health (401 under basic-auth also means up)
    try:
        alive = open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        alive = False
    if not alive:
        sys.exit(1)  # the server died: its log's last line says why
    try:
        urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2)
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        time.sleep(1)
else:
    sys.exit(1)
while time.time() < deadline:  # both Ray nodes alive
    out = subprocess.run(["ray", "status", f"--address={gcs}"], capture_output=True, text=True)
    active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    if out.returncode == 0 and active.count("node_") >= 2:
        sys.exit(0)
    time.sleep(1)
sys.exit(3)
PY

job_user="${FLOWTOPO_MLFLOW_JOB_USER:-flowtopo-jobs}"
if [ "$no_auth" = 0 ]; then  # the job user: non-admin, EDIT only on what a submitter grants it
  MLFLOW_TRACKING_USERNAME="${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" \
  MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD" "$py" -m flowtopo.cli sweep job-user \
    --tracking-uri "http://$host:$mlflow_port" --out "$job_credentials" --user "$job_user" \
    >/dev/null \
    || { echo "start.sh: could not create the MLflow job user $job_user (see $state/logs/mlflow.log)" >&2; "$here/stop.sh" >/dev/null; exit 1; }
  echo "export FLOWTOPO_MLFLOW_JOB_USER=$job_user" >> "$state/env"
fi

echo "Ray head        $host:$ray_port (dashboard + Jobs API http://$host:$dash_port)"
echo "Ray worker node joined; MLflow http://$host:$mlflow_port (store: $backend)"
echo "state, logs:    $state"
if [ "$no_auth" = 0 ]; then
  echo "jobs write to MLflow as $job_user (credentials: $job_credentials, mode 600); submit with"
  echo "your own MLflow user (MLFLOW_TRACKING_USERNAME/PASSWORD): it grants $job_user each sweep's experiment"
fi
echo
echo "  source $state/env"
echo "  flowtopo sweep submit sweeps/quickstart.yaml --address \$FLOWTOPO_RAY_ADDRESS --tracking-uri \$MLFLOW_TRACKING_URI"
