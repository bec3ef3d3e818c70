#!/usr/bin/env bash
# Stop what start.sh started, by the pids it recorded. The MLflow store and artifacts stay.
set -uo pipefail
state="${FLOWTOPO_CLUSTER_DIR:-$PWD/flowtopo-cluster}"
if [ ! -s "$state/pids" ]; then echo "stop.sh: nothing recorded in $state/pids"; exit 0; fi
pids=$(cut -d' ' -f2 "$state/pids")
# A process of group $1 still running. Zombies do not count: they are dead, and only their
# parent can reap them (a server restarted by hand is its shell's child, not ours).
group_alive() {
  local f line st pg
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    read -r st _ pg _ <<< "${line##*) }"
    [ "$pg" = "$1" ] && [ "$st" != Z ] && return 0
  done
  return 1
}
# Each service leads its own process group (start.sh used setsid). SIGTERM goes to each
# leader first: `ray start --block` then stops its node's processes in order and the MLflow
# server its workers, all gone in ~5 s. (SIGTERM to every process of a Ray group at once left
# the raylet and the GCS waiting on each other for ~30 s.) A group whose leader is gone (a node
# that died) has nobody to stop it in order: SIGTERM to the group, SIGKILL after 5 s. What is
# left after 10 s gets SIGTERM as a group, and after 30 s SIGKILL.
leaderless=""
for pid in $pids; do
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true
  else leaderless="$leaderless $pid"; kill -TERM -- "-$pid" 2>/dev/null || true; fi
done
for i in $(seq 1 60); do
  alive=0
  for pid in $pids; do group_alive "$pid" && alive=1; done
  [ "$alive" = 0 ] && break
  if [ "$i" = 10 ]; then
    for pid in $leaderless; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  elif [ "$i" = 20 ]; then
    for pid in $pids; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  fi
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
