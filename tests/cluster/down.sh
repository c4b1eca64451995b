#!/usr/bin/env bash
# Stop everything tests/cluster/up.sh started. Idempotent: stopping a stopped cluster is a no-op.
# Jobs still queued or running are cancelled first so no job processes outlive their slurmd.
# State (accounting database, slurmctld state, configs, packages) is kept: up.sh restarts quickly.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
READY_FILE=/tmp/hpcjobs-cluster-ready
T0=$(date +%s.%N)
say() { printf '[down.sh %5ss] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "$*"; }

[[ $(id -u) -eq 0 ]] || { echo "down.sh: must run as root" >&2; exit 1; }
# Same lock as up.sh: never tear down while another worker is bringing the cluster up.
exec 8>/run/hpcjobs-cluster.lock
flock 8
rm -f "$READY_FILE"

if [[ -f $HERE/sshd-down.sh ]]; then
  bash "$HERE/sshd-down.sh" 8>&- || echo "down.sh: warning: tests/cluster/sshd-down.sh failed" >&2
  say "sshd-down.sh done"
fi

pid_of() { # PIDFILE COMM: print the pid if the pid file names a live COMM process
  local pid
  [[ -r $1 ]] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [[ -n $pid ]] && [[ -r /proc/$pid/comm ]] && [[ $(cat "/proc/$pid/comm") == "$2" ]] || return 1
  echo "$pid"
}

# stop NAME=PIDFILE...: SIGTERM all at once (each takes ~2 s to exit), wait up to 10 s, then SIGKILL.
stop() {
  local spec comm pid
  local -A pids=()
  for spec in "$@"; do
    comm=${spec%%=*}
    pid=$(pid_of "${spec#*=}" "$comm") || continue
    kill "$pid" 2>/dev/null || true
    pids[$pid]=$comm
  done
  for _ in $(seq 100); do
    for pid in "${!pids[@]}"; do
      if [[ ! -d /proc/$pid ]]; then
        say "stopped ${pids[$pid]} ($pid)"
        unset "pids[$pid]"
      fi
    done
    ((${#pids[@]})) || return 0
    sleep 0.1
  done
  for pid in "${!pids[@]}"; do
    echo "down.sh: ${pids[$pid]} ($pid) ignored SIGTERM; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
  done
}

if pid_of /run/slurmctld.pid slurmctld >/dev/null && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null || true)
  if [[ -n $jobs ]]; then
    # shellcheck disable=SC2086 # one job id per word
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 150); do
      [[ -z $(squeue -h -o %A 2>/dev/null || true) ]] && break
      sleep 0.1
    done
    say "cancelled jobs: $(echo "$jobs" | tr '\n' ' ')"
  fi
fi

stop slurmd=/run/slurmd-node1.pid slurmd=/run/slurmd-node2.pid slurmctld=/run/slurmctld.pid
# After slurmctld, which sends its last accounting records to slurmdbd as it exits.
stop slurmdbd=/run/slurmdbd.pid

if pid=$(pid_of /run/mysqld/mysqld.pid mariadbd); then
  # A clean shutdown also ends the mysqld_safe watchdog (it would restart a killed mysqld).
  # In the background: it waits ~3 s for the server to finish, as munged takes ~2 s to stop.
  { mysqladmin --protocol=socket shutdown 2>/dev/null || kill "$pid" 2>/dev/null || true; } &
fi
stop munged=/run/munge/munged.pid
if [[ -n ${pid:-} ]]; then
  for _ in $(seq 300); do
    [[ -d /proc/$pid ]] || { say "stopped MariaDB ($pid)"; break; }
    sleep 0.1
  done
fi
wait
say "cluster down"
