#!/usr/bin/env bash
# cluster/down.sh [CONFDIR] [--purge] -- stop exactly the daemons cluster/up.sh CONFDIR started.
# Default CONFDIR: /var/tmp/dagster-hpc-cluster. NOTE: the cluster is shared (sessions, CI):
# stopping it cancels everyone's jobs.
# Every pid comes from a pid file under CONFDIR and is checked against the expected program
# name before it is signalled (no pkill/killall). Running jobs are cancelled first so that no
# slurmstepd/job processes outlive their slurmd.
# --purge additionally deletes CONFDIR and the /etc/slurm/slurm.conf link if it points into it
# (the test user and the installed packages are kept).
set -uo pipefail
CONFDIR=${DAGSTER_HPC_TEST_CLUSTER:-/var/tmp/dagster-hpc-cluster}; PURGE=0
for a in "$@"; do case $a in --purge) PURGE=1 ;; -*) echo "usage: down.sh [CONFDIR] [--purge]" >&2; exit 2 ;; *) CONFDIR=$a ;; esac; done
[ -d "$CONFDIR" ] || { echo "cluster/down.sh: $CONFDIR does not exist, nothing to do"; exit 0; }
CONFDIR=$(cd "$CONFDIR" && pwd); D=$CONFDIR
export SLURM_CONF=$D/etc/slurm.conf
T0=$(date +%s%N)
log() { printf "[cluster/down %6.1fs] %s\n" "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }

# running = exists and is not a zombie (PID 1 here may reap daemonized children late)
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
pid_of() { local pf=$1 comm=$2 pid; [ -s "$pf" ] || return 1; pid=$(cat "$pf" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] && echo "$pid"; }
# stop PIDFILE COMM [TIMEOUT_S]: SIGTERM, wait, SIGKILL as last resort
stop() { local pf=$1 comm=$2 t=${3:-20} pid
  if ! pid=$(pid_of "$pf" "$comm"); then rm -f "$pf"; return 0; fi
  kill -TERM "$pid" 2>/dev/null
  for ((i=0;i<t*10;i++)); do running "$pid" || break; sleep 0.1; done
  if running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
    log "$comm ($pid) did not stop in ${t}s, SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.5; fi
  rm -f "$pf"; log "stopped $comm ($pid)"; }

# 1. cancel jobs while slurmctld is still up, wait for them to leave the nodes
if pid_of "$D/run/slurmctld.pid" slurmctld >/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086,SC2116 # one line of ids; one argument per job id
    { log "cancelling jobs: $(echo $jobs)"; scancel $jobs 2>/dev/null; }
    for ((i=0;i<80;i++)); do [ -z "$(squeue -h -t all -o '%A %t' 2>/dev/null | awk '$2 !~ /^(CD|CA|F|TO|PR|NF|OOM|BF|DL)$/')" ] && break; sleep 0.25; done
  fi
fi
# 2. sshd instances (open sessions keep their own per-connection processes until they end)
stop "$D/run/sshd-main.pid" sshd; stop "$D/run/sshd-jump.pid" sshd; stop "$D/run/sshd-otp.pid" sshd-otp
# 3. slurmd(s), slurmctld, slurmdbd
for pf in "$D"/run/slurmd-*.pid; do [ -e "$pf" ] && stop "$pf" slurmd; done
stop "$D/run/slurmctld.pid" slurmctld 30
stop "$D/run/slurmdbd.pid" slurmdbd 30
# 4. MariaDB (clean shutdown through its socket first), then munged
if pid=$(pid_of "$D/mysql/run/mysqld.pid" mariadbd); then
  mariadb-admin --no-defaults --socket="$D/mysql/run/mysqld.sock" -uroot shutdown >/dev/null 2>&1
  for ((i=0;i<300;i++)); do running "$pid" || break; sleep 0.1; done
  stop "$D/mysql/run/mysqld.pid" mariadbd 30; log "stopped mariadbd ($pid)"
fi
stop "$D/munge/run/munged.pid" munged

if [ $PURGE = 1 ]; then
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$D/etc/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  rm -rf "$D"; log "purged $D"
fi
log "done"
