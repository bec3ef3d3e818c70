#!/usr/bin/env bash
# Stop what start.sh started, by the pids it recorded. The MLflow store and artifacts stay.
set -uo pipefail
state="${FLOWTOPO_CLUSTER_DIR:-$PWD/flowtopo-cluster}"
if [ ! -s "$state/pids" ]; then echo "stop.sh: nothing recorded in $state/pids"; exit 0; fi
pids=$(cut -d' ' -f2 "$state/pids")
# Each service leads its own process group (start.sh used setsid): signal the whole group.
# `ray start --block` drains and tears its node down on SIGTERM; the MLflow server exits.
for pid in $pids; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
for _ in $(seq 1 60); do
  alive=0
  for pid in $pids; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.5
done
for pid in $pids; do kill -KILL -- "-$pid" 2>/dev/null || true; done
# Leftovers of these nodes only: processes whose command line names this cluster's Ray temp
# dirs or its artifact store, or that run inside a Ray temp dir (job drivers: their working
# dir is the job's unpacked working_dir).
temp="/tmp/ftc-$(printf '%s' "$(cd "$state" && pwd)" | cksum | cut -d' ' -f1)"
for proc in /proc/[0-9]*; do
  pid="${proc#/proc/}"
  [ "$pid" = "$$" ] && continue
  cwd="$(readlink "$proc/cwd" 2>/dev/null || true)"
  if [ "${cwd#"$temp"}" != "$cwd" ] || { tr '\0' ' ' < "$proc/cmdline"; } 2>/dev/null \
       | grep -qF -e "$temp" -e "$state/artifacts"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
: > "$state/pids"
echo "stopped; the MLflow store and artifacts stay in $state"
