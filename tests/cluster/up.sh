#!/usr/bin/env bash
# Install (from Debian packages) and start a real two-node Slurm test cluster on this machine.
#
# Idempotent: a second run while the cluster is up only verifies it (a couple of seconds).
# Needs root, Debian 12, no systemd. See tests/cluster/README.md for the layout.
#
# Environment:
#   HPCJOBS_CLUSTER_SKIP_JOB=1   skip the trial sbatch job on a cold start
#   HPCJOBS_CLUSTER_FORCE_JOB=1  run the trial sbatch job even when the cluster was already up
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_DIR=/var/log/hpcjobs-test
READY_FILE=/tmp/hpcjobs-cluster-ready
JOB_ROOT=/srv/hpcjobs
CLUSTER=hpcjobs
NODES=(node1 node2)
SLURM_ETC=/etc/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS_FILE=/etc/slurm/.hpcjobs-dbpass
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server libpmix2 openmpi-bin
  libopenmpi-dev openssh-server charliecloud-runtime python3-venv curl)

T0=$(date +%s.%N)
STEP_T=$T0
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() {
  printf '[up.sh %6ss] %s (previous step %ss)\n' "$(elapsed "$T0")" "$*" "$(elapsed "$STEP_T")"
  STEP_T=$(date +%s.%N)
}
die() {
  echo "up.sh: ERROR: $*" >&2
  echo "up.sh: logs are in $LOG_DIR" >&2
  exit 1
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "timed out after ${limit}s waiting for: $what"
    fi
    sleep 0.2
  done
}

# alive PIDFILE COMM: the pid file names a live process whose command name is COMM.
alive() {
  local pid
  [[ -r $1 ]] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [[ -n $pid ]] && [[ -r /proc/$pid/comm ]] && [[ $(cat "/proc/$pid/comm") == "$2" ]]
}

# install_if_changed SRC DEST MODE OWNER: replace DEST by SRC when they differ; return 0 if changed.
install_if_changed() {
  local src=$1 dest=$2 mode=$3 owner=$4
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    rm -f "$src"
    if ! chmod "$mode" "$dest" || ! chown "$owner" "$dest"; then die "cannot chmod/chown $dest"; fi
    return 1
  fi
  # (set -e does not apply inside a function called as a condition, so check explicitly.)
  install -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dest" || die "cannot install $dest"
  rm -f "$src"
  return 0
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
# Parallel test workers may call this at once: one at a time (down.sh takes the same lock). Every
# daemon is started with fd 8 closed, or it would hold the lock for as long as it runs.
exec 8>/run/hpcjobs-cluster.lock
flock 8
mkdir -p "$LOG_DIR"

# ---------------------------------------------------------------- packages
missing=()
installed=" $(dpkg-query -W -f='${Package}=${db:Status-Status} ' "${PACKAGES[@]}" 2>/dev/null || true)"
for p in "${PACKAGES[@]}"; do
  [[ $installed == *" $p=installed "* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "up.sh: installing ${missing[*]} (log: $LOG_DIR/apt.log)"
  # Keep the packages' maintainer scripts from starting daemons: we start them ourselves below.
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 ||
    die "apt-get install failed: $(tail -n 5 "$LOG_DIR/apt.log")"
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  step "packages installed"
fi

# ---------------------------------------------------------------- host: names, users, dirs, devices
if ! grep -Eq '^127\.0\.0\.1([[:space:]].*)?[[:space:]]node1([[:space:]]|$)' /etc/hosts ||
  ! grep -Eq '^127\.0\.0\.1([[:space:]].*)?[[:space:]]node2([[:space:]]|$)' /etc/hosts; then
  # Append rather than rewrite: /etc/hosts is often a bind mount that cannot be replaced.
  echo "127.0.0.1 ${NODES[*]}" >>/etc/hosts
fi

if ! id alice >/dev/null 2>&1; then
  useradd -m -s /bin/bash alice
fi
# '!' (locked) makes sshd refuse even key logins; '*' means "no password" but not locked.
if [[ $(getent shadow alice | cut -d: -f2) != '*' ]]; then
  usermod -p '*' alice
fi

install -d -m 1777 "$JOB_ROOT"
for n in "${NODES[@]}"; do
  install -d -m 1777 "/var/tmp/$n-tmp"
  install -d -m 755 "/var/spool/slurmd/$n"
done
install -d -m 755 -o slurm -g slurm /var/spool/slurmctld
# slurmctld and slurmdbd (user slurm) chdir into their log directory.
chown root:slurm "$LOG_DIR"
chmod 775 "$LOG_DIR"
# Slurm daemons running as SlurmUser=slurm must be able to write their logs.
for f in slurmctld.log slurmdbd.log; do
  [[ -e $LOG_DIR/$f ]] || install -m 640 -o slurm -g slurm /dev/null "$LOG_DIR/$f"
done

# Fake GPUs: Slurm accepts only character or block devices in gres.conf File=.
for i in 0 1 2 3; do
  if [[ ! -c /dev/fakegpu$i ]]; then
    rm -f "/dev/fakegpu$i"
    mknod -m 666 "/dev/fakegpu$i" c 1 3
  fi
done

# ---------------------------------------------------------------- configuration files
mkdir -p "$SLURM_ETC"
restart_slurm=0

tmp=$(mktemp)
cat >"$tmp" <<EOF
# Generated by tests/cluster/up.sh: a two-node test cluster emulated on one host.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# There is no mail program here; the default (/bin/mail) makes slurmctld log an error.
MailProg=/bin/true

# No systemd and no usable cgroups here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Samples /proc (no cgroups needed); at the default 30 s a short job gets no MaxRSS at all.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
# Trust the node lines below even where the host has fewer CPUs or less memory (e.g. a CI runner).
SlurmdParameters=config_overrides

SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node's memory and runs alone on it.
DefMemPerCPU=500
GresTypes=gpu
MpiDefault=none

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu

# Fast turnaround for tests (measured here): batch_sched_delay=0 starts a submitted batch job at once
# (default 3 s: a trivial job took ~3 s from sbatch to COMPLETED in sacct, now ~1 s); bf_interval=1
# (default 30) refills freed CPUs sooner (20 one-second array tasks: ~17 s -> ~8-10 s).
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=5
MinJobAge=300
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SlurmdTimeout=60
ReturnToService=2
MaxArraySize=1001
# benchmarks submit several 1000-task arrays; every task counts until MinJobAge after it ends
MaxJobCount=100000

NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
NodeName=node2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=01:00:00 DefaultTime=00:30:00 State=UP
PartitionName=gpu Nodes=node1,node2 MaxTime=01:00:00 DefaultTime=00:30:00 State=UP
EOF
install_if_changed "$tmp" "$SLURM_ETC/slurm.conf" 644 root:root && restart_slurm=1

tmp=$(mktemp)
cat >"$tmp" <<'EOF'
# Generated by tests/cluster/up.sh. Character devices; nvidia_gpu_env sets CUDA_VISIBLE_DEVICES.
NodeName=node1 Name=gpu File=/dev/fakegpu[0-1] Flags=nvidia_gpu_env
NodeName=node2 Name=gpu File=/dev/fakegpu[2-3] Flags=nvidia_gpu_env
EOF
install_if_changed "$tmp" "$SLURM_ETC/gres.conf" 644 root:root && restart_slurm=1

if [[ ! -s $DB_PASS_FILE ]]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DB_PASS_FILE")
fi
chmod 600 "$DB_PASS_FILE"
db_pass=$(cat "$DB_PASS_FILE")

restart_mysql=0
tmp=$(mktemp)
cat >"$tmp" <<'EOF'
# Generated by tests/cluster/up.sh: the values slurmdbd recommends (it logs an error otherwise).
# The buffer pool is reserved, not touched: resident memory stays small for a small database.
[mysqld]
innodb_buffer_pool_size=4096M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
EOF
install_if_changed "$tmp" /etc/mysql/mariadb.conf.d/90-hpcjobs-slurmdbd.cnf 644 root:root &&
  restart_mysql=1

restart_dbd=0
tmp=$(mktemp)
cat >"$tmp" <<EOF
# Generated by tests/cluster/up.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$db_pass
StorageLoc=$DB_NAME
EOF
# slurmdbd refuses a config file readable by others or not owned by SlurmUser.
install_if_changed "$tmp" "$SLURM_ETC/slurmdbd.conf" 600 slurm:slurm && restart_dbd=1

# ---------------------------------------------------------------- stop what must be restarted
stop_pidfile() { # PIDFILE COMM
  local pid
  if alive "$1" "$2"; then
    pid=$(tr -dc '0-9' <"$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -d /proc/$pid ]] || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
}
if ((restart_slurm || restart_dbd || restart_mysql)); then
  rm -f "$READY_FILE"
fi
if ((restart_slurm)); then
  for n in "${NODES[@]}"; do stop_pidfile "/run/slurmd-$n.pid" slurmd; done
  stop_pidfile /run/slurmctld.pid slurmctld
fi
if ((restart_dbd || restart_mysql)); then
  stop_pidfile /run/slurmdbd.pid slurmdbd
fi
if ((restart_mysql)) && alive /run/mysqld/mysqld.pid mariadbd; then
  mysqladmin --protocol=socket shutdown || true
  wait_for 30 "MariaDB to stop" sh -c '! test -e /run/mysqld/mysqld.pid'
fi

# starting: a daemon is about to be (re)started, so the cluster is not verified up until the end.
started_any=0
starting() {
  started_any=1
  rm -f "$READY_FILE"
}

# ---------------------------------------------------------------- munge
if ! alive /run/munge/munged.pid munged; then
  install -d -m 755 -o munge -g munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2
  [[ -e $LOG_DIR/munged.log ]] || install -m 640 -o munge -g munge /dev/null "$LOG_DIR/munged.log"
  starting
  runuser -u munge -- /usr/sbin/munged --log-file="$LOG_DIR/munged.log" 8>&- ||
    die "munged failed to start"
  wait_for 10 "munge to answer" sh -c 'munge -n | unmunge'
  step "munged started"
fi

# ---------------------------------------------------------------- MariaDB
if ! alive /run/mysqld/mysqld.pid mariadbd; then
  install -d -m 755 -o mysql -g mysql /run/mysqld
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG_DIR/mysqld.log" 2>&1 ||
      die "mariadb-install-db failed"
  fi
  [[ -e $LOG_DIR/mysqld.log ]] || install -m 640 -o mysql -g adm /dev/null "$LOG_DIR/mysqld.log"
  chown mysql "$LOG_DIR/mysqld.log"
  # mysqld_safe watches and restarts mysqld; detach it from this shell so it outlives us.
  starting
  setsid mysqld_safe --skip-syslog --log-error="$LOG_DIR/mysqld.log" \
    --pid-file=/run/mysqld/mysqld.pid </dev/null >>"$LOG_DIR/mysqld_safe.log" 2>&1 8>&- &
  wait_for 60 "MariaDB to answer" mysqladmin --protocol=socket ping
  step "MariaDB started"
fi
mysql --protocol=socket -u root <<EOF || die "creating the slurmdbd database failed"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF

# ---------------------------------------------------------------- slurmdbd + accounting
if ! alive /run/slurmdbd.pid slurmdbd; then
  starting
  slurmdbd 8>&- || die "slurmdbd failed to start"
  wait_for 60 "slurmdbd to answer" sacctmgr -n list cluster
  step "slurmdbd started"
fi

# sacctmgr add fails for things that already exist, so add only what is missing (one listing keeps
# a warm run fast: each sacctmgr call costs ~0.2 s). slurmdbd creates QOS "normal" itself.
assocs=$(sacctmgr -n -P list assoc format=cluster,account,user)
added=0
if ! grep -qx "$CLUSTER|root|" <<<"$assocs"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
for acct in research physics; do
  if ! grep -qx "$CLUSTER|$acct|" <<<"$assocs"; then
    sacctmgr -i add account "$acct" cluster="$CLUSTER" Description="$acct" Organization=hpcjobs >/dev/null
  fi
done
for ua in root:research alice:research alice:physics; do
  if ! grep -qx "$CLUSTER|${ua#*:}|${ua%%:*}" <<<"$assocs"; then
    sacctmgr -i add user "${ua%%:*}" account="${ua#*:}" cluster="$CLUSTER" >/dev/null
    added=1
  fi
done
if ((added)); then
  users=$(sacctmgr -n -P list user format=user,defaultaccount)
  for u in root alice; do
    if ! grep -qx "$u|research" <<<"$users"; then
      sacctmgr -i modify user "$u" set defaultaccount=research >/dev/null
    fi
  done
  [[ -n $(sacctmgr -n -P list qos normal format=name) ]] || die "QOS normal is missing"
fi

# ---------------------------------------------------------------- slurmctld
if ! alive /run/slurmctld.pid slurmctld; then
  starting
  slurmctld 8>&- || die "slurmctld failed to start"
  wait_for 60 "slurmctld to answer" scontrol ping
  step "slurmctld started"
  # A restarted test cluster has nobody waiting on jobs from before (a machine that
  # stopped mid-run leaves them in the saved state, holding nodes and job slots):
  # cancel them, accounting keeps their records.
  leftover=$(squeue -h -a -o '%F' | sort -u | tr '\n' ' ')
  if [[ -n ${leftover// /} ]]; then
    # shellcheck disable=SC2086 # a list of job ids
    scancel $leftover 2>/dev/null || true
    step "cancelled jobs left from an earlier run: $leftover"
  fi
fi

# ---------------------------------------------------------------- slurmd x2
for n in "${NODES[@]}"; do
  if ! alive "/run/slurmd-$n.pid" slurmd; then
    # A private /tmp per node: two slurmds on one host otherwise share /tmp/spmix_appdir_* and
    # multi-node PMIx jobs collide. The namespace stays with the daemonized slurmd.
    starting
    unshare --mount --propagation private \
      sh -c "mount --bind /var/tmp/$n-tmp /tmp && exec slurmd -N $n" 8>&- ||
      die "slurmd -N $n failed to start"
  fi
done

nodes_ready() {
  local states
  states=$(sinfo -h -N -p debug -o '%N %T' 2>/dev/null | sort -u) || return 1
  [[ $(grep -cE '^node[12] (idle|mixed|allocated|completing)$' <<<"$states") -eq 2 ]]
}
if ! nodes_ready; then
  # Nodes left DOWN/DRAINED by an earlier run come back with a resume.
  sleep 1
  for n in "${NODES[@]}"; do
    if sinfo -h -n "$n" -o '%T' | grep -qiE 'down|drain'; then
      scontrol update nodename="$n" state=resume 2>/dev/null || true
    fi
  done
  wait_for 60 "both nodes idle in sinfo (see $LOG_DIR/slurmd-node*.log)" nodes_ready
  step "slurmd node1 node2 registered"
fi

# ---------------------------------------------------------------- verify
sacct -n -X -S now-1minutes >/dev/null || die "sacct does not work"

if ((started_any)) && [[ ${HPCJOBS_CLUSTER_SKIP_JOB:-0} != 1 ]] || [[ ${HPCJOBS_CLUSTER_FORCE_JOB:-0} == 1 ]]; then
  job_t=$(date +%s.%N)
  # shellcheck disable=SC2016 # expanded by the job, not here
  jobid=$(cd "$JOB_ROOT" && runuser -u alice -- sbatch --parsable -J up-check -t 1 \
    -o "$JOB_ROOT/up-check-%j.out" --wrap 'echo ok on $(hostname) $SLURMD_NODENAME') ||
    die "sbatch as alice failed"
  jobid=${jobid%%;*}
  deadline=$((SECONDS + 120))
  until [[ $(sacct -n -X -P -j "$jobid" -o State 2>/dev/null) == COMPLETED ]]; do
    if ((SECONDS >= deadline)); then
      die "trial job $jobid is not COMPLETED after 120 s: $(squeue -h -j "$jobid" -o '%T %R' 2>/dev/null) $(sacct -n -X -P -j "$jobid" -o State,Reason 2>/dev/null)"
    fi
    sleep 0.1
  done
  rm -f "$JOB_ROOT/up-check-$jobid.out"
  echo "up.sh: trial job $jobid as alice: sbatch -> COMPLETED in sacct in $(elapsed "$job_t")s"
  step "trial job done"
fi

if [[ -f $HERE/sshd-up.sh ]]; then
  bash "$HERE/sshd-up.sh" 8>&- || die "tests/cluster/sshd-up.sh failed"
fi

touch "$READY_FILE"
echo "cluster up in $(elapsed "$T0")s: $(sinfo -h -N -p debug -o '%N=%T' | tr '\n' ' ')(logs: $LOG_DIR)"
