#!/usr/bin/env bash
# cluster/up.sh [CONFDIR] -- bring up the real single-machine Slurm test cluster + SSH servers.
# Default CONFDIR: /var/tmp/dagster-hpc-cluster (fixed: sessions and CI share the same daemons,
# because the ports are fixed). Adopted from the verified recipe in shared/reference/test-cluster.
#
# Idempotent: run it again and it only starts what is not running (and restarts the Slurm
# daemons if the generated slurm.conf changed). Everything lives under CONFDIR:
#   CONFDIR/etc/slurm.conf, slurmdbd.conf   CONFDIR/env.sh (source it: exports SLURM_CONF ...)
#   CONFDIR/run/*.pid  CONFDIR/log/*.log   CONFDIR/spool/  CONFDIR/munge/  CONFDIR/mysql/
#   CONFDIR/ssh/ (host keys, sshd_*.conf)  CONFDIR/client/ (id_ed25519, known_hosts, ssh_config,
#   otp-askpass.sh, totp_secret)
# Stop with cluster/down.sh CONFDIR (kills exactly the pids in the pid files written here).
#
# Tunables (environment):
#   NODES=4            number of slurmd (node1..nodeN), one process each, -N nodeN, own port
#   NODE_CPUS=4 NODE_MEM_MB=4000   advertised per node (SlurmdParameters=config_overrides)
#   GPU_NODES=2 GPUS_PER_NODE=2   nodes gpu1..gpuN of partition GPU_PARTITION=gpu with Gres=gpu:N:
#                      no real devices. Slurm 22.05 drops a File-less GPU ("Removing file-less
#                      GPU"), so gres.conf points File= at placeholder char devices CONFDIR/dev/gpuK
#                      (mknod 1,3, i.e. /dev/null); jobs get CUDA_VISIBLE_DEVICES, sacct gres/gpu
#   MAX_ARRAY_SIZE=40  MaxArraySize: small on purpose, so arrays are split by the library for real
#   PREEMPT_NODES=1    nodes pre1..preN, only in partitions PREEMPT_PARTITION=preemptible (PriorityTier 1,
#                      PreemptMode=REQUEUE) and URGENT_PARTITION=urgent (PriorityTier 2): an urgent job
#                      requeues a preemptible one (PreemptType=preempt/partition_prio); debug and gpu
#                      are PreemptMode=OFF, so nobody else's job is ever preempted. 0: no preemption
#   CRED_EXPIRE=15     AuthInfo cred_expire (s): a requeued job waits this long + 1 s before it may
#                      start again (Slurm's default 120 would make every requeue test wait 2 minutes)
#   UTS_HOSTNAMES=1    run each slurmd in its own UTS namespace so `hostname` in a job == nodeN
#   ACCOUNTING=dbd     dbd: MariaDB + slurmdbd (sacct/sstat work); none: no accounting db
#   KILL_INVALID_DEPEND=0   1: jobs whose dependency can never be satisfied are cancelled
#   CLUSTER=testcluster TEST_USER=hpcuser TEST_PASS=hpcpass TEST_ACCOUNT=testacct
#   TOTP_SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP (base32)
#   CTLD_PORT=6817 SLURMD_BASE_PORT=17001 DBD_PORT=6819 MYSQL_PORT=3307
#   SSH_PORT=2222 (key+password) SSH_JUMP_PORT=2223 (jump host) SSH_OTP_PORT=2224 (key + TOTP)
#   SKIP_APT=0 SMOKE=1 (submit one job over ssh at the end and wait for it)
#   CGROUP=0           0 (default): task/none + JobAcctGatherParams=OverMemoryKill: the accounting
#                      sampler kills a step above --mem after SEEING its peak (MaxRSS > --mem is
#                      recorded), state FAILED 0:9 + "Exceeded job memory limit" in stderr.
#                      1: task/cgroup + proctrack/cgroup (cgroup v1): the kernel enforces --mem and
#                      the job ends OUT_OF_MEMORY, but is killed before the sampler sees its peak.
#                      auto: 1 when a writable cgroup v1 memory controller exists
#   DRAIN_WAIT_S=120   a restart-requiring change waits (nodes drained) this long for running jobs
#   PAYLOAD_ENV=1      build CONFDIR/envs/payload (venv: dagster-pipes + polars, pinned) for jobs
#   DAGSTER_PIPES_VERSION / POLARS_VERSION  pins of that env (default: read from ../uv.lock)
#   PAYLOAD_PYTHON=    with PAYLOAD_ENV=0: the interpreter env.sh names for jobs (e.g. another
#                      instance's payload env), so a second instance builds nothing
#   ETC_LINK=1         point /etc/slurm/slurm.conf at this CONFDIR (when it is a link or absent);
#                      0 for a second instance: the link stays with the shared cluster
#   SSH_EXTRA=1        also the jump host and the TOTP sshd (and the test user's TOTP file);
#                      0: the login sshd only (a second instance leaves the shared files alone)
#   LOGIN_PATH=        prepended to PATH of every login-node session (sshd SetEnv): a directory
#                      of shims, e.g. one that counts squeue calls (tests/integration/fault_cluster.py)
#   CLIENT_KEY=        an existing private key to use as CONFDIR/client/id_ed25519 (copied):
#                      a key already in the test user's authorized_keys is not appended again
# A second instance on the same machine (fault tests): its own CONFDIR and every port of its own,
# NODES=2 GPU_NODES=0 PAYLOAD_ENV=0 ETC_LINK=0 SSH_EXTRA=0; stop it with down.sh CONFDIR --purge.
set -euo pipefail

CONFDIR=${1:-${DAGSTER_HPC_TEST_CLUSTER:-/var/tmp/dagster-hpc-cluster}}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$CONFDIR"; CONFDIR=$(cd "$CONFDIR" && pwd)
NODES=${NODES:-4}; NODE_CPUS=${NODE_CPUS:-4}; NODE_MEM_MB=${NODE_MEM_MB:-4000}
UTS_HOSTNAMES=${UTS_HOSTNAMES:-1}; ACCOUNTING=${ACCOUNTING:-dbd}
KILL_INVALID_DEPEND=${KILL_INVALID_DEPEND:-0}
CLUSTER=${CLUSTER:-testcluster}; TEST_USER=${TEST_USER:-hpcuser}; TEST_PASS=${TEST_PASS:-hpcpass}
TEST_ACCOUNT=${TEST_ACCOUNT:-testacct}; TOTP_SECRET=${TOTP_SECRET:-JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP}
CTLD_PORT=${CTLD_PORT:-6817}; SLURMD_BASE_PORT=${SLURMD_BASE_PORT:-17001}; DBD_PORT=${DBD_PORT:-6819}
MYSQL_PORT=${MYSQL_PORT:-3307}
SSH_PORT=${SSH_PORT:-2222}; SSH_JUMP_PORT=${SSH_JUMP_PORT:-2223}; SSH_OTP_PORT=${SSH_OTP_PORT:-2224}
SKIP_APT=${SKIP_APT:-0}; SMOKE=${SMOKE:-1}; PAYLOAD_ENV=${PAYLOAD_ENV:-1}
CGROUP=${CGROUP:-0}; DRAIN_WAIT_S=${DRAIN_WAIT_S:-120}
GPU_NODES=${GPU_NODES:-2}; GPUS_PER_NODE=${GPUS_PER_NODE:-2}; GPU_PARTITION=${GPU_PARTITION:-gpu}
MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-40}
PREEMPT_NODES=${PREEMPT_NODES:-1}; PREEMPT_PARTITION=${PREEMPT_PARTITION:-preemptible}
URGENT_PARTITION=${URGENT_PARTITION:-urgent}; CRED_EXPIRE=${CRED_EXPIRE:-15}
PAYLOAD_PYTHON=${PAYLOAD_PYTHON:-}; ETC_LINK=${ETC_LINK:-1}; SSH_EXTRA=${SSH_EXTRA:-1}
LOGIN_PATH=${LOGIN_PATH:-}; CLIENT_KEY=${CLIENT_KEY:-}
# default memory per CPU = a node's memory / its CPUs: with enforced limits, a job that asks for
# no memory still gets a fair share (the former 256 MB would OOM-kill an ordinary Python payload)
DEF_MEM_PER_CPU=${DEF_MEM_PER_CPU:-$((NODE_MEM_MB / NODE_CPUS))}
# version of a package pinned in the project's uv.lock (the payload env must match the client side)
lock_version() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$HERE/../uv.lock" 2>/dev/null; }
DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-$(lock_version dagster-pipes)}; DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-1.13.27}
POLARS_VERSION=${POLARS_VERSION:-$(lock_version polars)}; POLARS_VERSION=${POLARS_VERSION:-2.1.0}

T0=$(date +%s%N)
log() { printf '[cluster/up %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
die() { echo "cluster/up.sh: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# pid_alive PIDFILE COMM -> 0 if the pid in PIDFILE is running and its comm is COMM
# (a zombie counts as dead: PID 1 in such sandboxes may reap daemonized processes late)
pid_alive() { local pf=$1 comm=$2 pid st; [ -s "$pf" ] || return 1; pid=$(cat "$pf" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1; st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; }
# listening check without connecting (a bare connect makes slurmctld log "Zero Bytes were transmitted")
port_open() { if command -v ss >/dev/null; then [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
  else (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; fi; }
wait_port() { local p=$1 what=$2 n=${3:-120}; for ((i=0;i<n;i++)); do port_open "$p" && return 0; sleep 0.25; done
  die "$what did not open 127.0.0.1:$p (see $CONFDIR/log)"; }
# refuse to start a daemon on a port someone else already holds
port_free_or_die() { if port_open "$1"; then die "port $1 ($2) is in use by another process:
$(ss -ltnp 2>/dev/null | grep ":$1 " || true)"; fi; }

# ---------------------------------------------------------------- 1. packages
PKGS=(slurmctld slurmd slurm-client munge openssh-server openssh-client libpam-google-authenticator
      oathtool sshpass iproute2 util-linux procps)
[ "$ACCOUNTING" = dbd ] && PKGS+=(slurmdbd mariadb-server mariadb-client)
[ "$PAYLOAD_ENV" = 1 ] && PKGS+=(python3-venv)   # the pre-deployed payload env is a venv of /usr/bin/python3
if [ "$SKIP_APT" != 1 ]; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    # keep package maintainer scripts from starting system-wide daemons (no systemd here)
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d; own_policy=1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "apt: done"
  else
    log "apt: all packages present"
  fi
fi

# ---------------------------------------------------------------- 2. layout, user
D=$CONFDIR
install -d -m 0755 "$D" "$D/etc" "$D/run" "$D/log" "$D/spool" "$D/spool/ctld" "$D/spool/d" "$D/ssh" "$D/client"
# every slurmd: nodeN (partition debug) and gpuN (partition $GPU_PARTITION), one list for the loops below
ALL_NODES=(); for ((n=1;n<=NODES;n++)); do ALL_NODES+=("node$n"); done
for ((n=1;n<=GPU_NODES;n++)); do ALL_NODES+=("gpu$n"); done
for ((n=1;n<=PREEMPT_NODES;n++)); do ALL_NODES+=("pre$n"); done
for nn in "${ALL_NODES[@]}"; do install -d -m 0755 "$D/spool/d/$nn"; done
if [ "$GPU_NODES" -gt 0 ]; then   # placeholder GPU devices: char devices equal to /dev/null
  install -d -m 0755 "$D/dev"
  for ((k=0;k<GPUS_PER_NODE;k++)); do
    [ -c "$D/dev/gpu$k" ] || { rm -f "$D/dev/gpu$k"; mknod -m 0666 "$D/dev/gpu$k" c 1 3 2>/dev/null || \
      { touch "$D/dev/gpu$k"; log "WARNING: mknod failed ($D is nodev?): $D/dev/gpu$k is a plain file (slurmd logs an error but counts it)"; }; }
  done
fi
install -d -m 0755 -o munge -g munge "$D/munge" "$D/munge/run"   # socket path must be o+x for all users
install -d -m 0700 -o munge -g munge "$D/munge/etc" "$D/munge/lib" "$D/munge/log"
install -d -m 0755 /run/sshd
chmod 1777 "$D/log"   # job output of tests may be pointed here by any user

if ! id "$TEST_USER" >/dev/null 2>&1; then useradd -m -s /bin/bash "$TEST_USER"; log "created user $TEST_USER"; fi
echo "$TEST_USER:$TEST_PASS" | chpasswd
UHOME=$(getent passwd "$TEST_USER" | cut -d: -f6)

# ---------------------------------------------------------------- 2b. payload env, in the background
# cluster/payload-env.sh keeps or builds CONFDIR/envs/payload; pip's downloads take seconds, so it
# runs while the daemons start and step 10 waits for it.
PAYLOAD_PID=
if [ "$PAYLOAD_ENV" = 1 ]; then
  TEST_USER=$TEST_USER DAGSTER_PIPES_VERSION=$DAGSTER_PIPES_VERSION POLARS_VERSION=$POLARS_VERSION \
    bash "$HERE/payload-env.sh" "$D" > "$D/log/payload-env.log" 2>&1 &
  PAYLOAD_PID=$!
fi

# ---------------------------------------------------------------- 3. munge
MUNGE_SOCK=$D/munge/run/munge.socket
if [ ! -s "$D/munge/etc/munge.key" ]; then
  dd if=/dev/urandom of="$D/munge/etc/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$D/munge/etc/munge.key"; chmod 0400 "$D/munge/etc/munge.key"
if pid_alive "$D/munge/run/munged.pid" munged; then log "munged already running"
else
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  runuser -u munge -- /usr/sbin/munged --key-file="$D/munge/etc/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$D/munge/run/munged.pid" --log-file="$D/munge/log/munged.log" --seed-file="$D/munge/lib/munged.seed"
  log "munged started (pid $(cat "$D/munge/run/munged.pid"))"
fi
munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK" >/dev/null || die "munge self-test failed"

# ---------------------------------------------------------------- 4. slurm.conf
if [ "$CGROUP" = auto ]; then
  # Slurm 22.05's cgroup/v1 plugin needs a writable v1 memory controller (v2 needs systemd/dbus)
  probe=/sys/fs/cgroup/memory/.dagster-hpc-probe-$$
  if mkdir "$probe" 2>/dev/null; then rmdir "$probe"; CGROUP=1; else CGROUP=0; fi
  log "cgroup memory enforcement: $([ $CGROUP = 1 ] && echo 'on (task/cgroup, cgroup v1)' || echo 'off (no writable cgroup v1 memory controller)')"
fi
HOST=$(hostname -s)
SLURM_CONF=$D/etc/slurm.conf; export SLURM_CONF
LASTPORT=$((SLURMD_BASE_PORT + NODES - 1))
GPU_FIRSTPORT=$((SLURMD_BASE_PORT + NODES)); GPU_LASTPORT=$((SLURMD_BASE_PORT + NODES + GPU_NODES - 1))
PRE_FIRSTPORT=$((GPU_LASTPORT + 1)); PRE_LASTPORT=$((GPU_LASTPORT + PREEMPT_NODES))
# preemption only where it is asked for: the default partitions never lose a job to it
NO_PREEMPT=$([ "$PREEMPT_NODES" -gt 0 ] && echo " PreemptMode=OFF" || true)
{
cat <<EOF
# generated by cluster/up.sh -- do not edit, re-run cluster/up.sh instead
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
CredType=cred/munge
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
EOF
if [ "$CGROUP" = 1 ]; then cat <<EOF
# memory limits enforced by the kernel: an over-memory job ends OUT_OF_MEMORY (cgroup.conf)
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
EOF
else cat <<EOF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no cgroups: the accounting sampler kills a step above its --mem (recorded FAILED, signal 9)
JobAcctGatherParams=OverMemoryKill
EOF
fi
cat <<EOF
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
# sched_interval=2: a requeued job starts within ~2 s of its BeginTime (the main loop's default
# is 60 s, and the backfill loop only runs after a job or node change)
SchedulerParameters=bf_interval=2,bf_hetjob_immediate,sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=2
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
MaxArraySize=$MAX_ARRAY_SIZE
EOF
[ "$GPU_NODES" -gt 0 ] && echo "GresTypes=gpu"
if [ "$ACCOUNTING" = dbd ]; then cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# with a non-default munge socket this is how the dbd connection finds it
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=cpu,mem,node,billing$([ "$GPU_NODES" -gt 0 ] && echo ,gres/gpu)
EOF
else echo "AccountingStorageType=accounting_storage/none"; fi
[ "$KILL_INVALID_DEPEND" = 1 ] && echo "DependencyParameters=kill_invalid_depend"
if [ "$PREEMPT_NODES" -gt 0 ]; then printf '%s\n' PreemptType=preempt/partition_prio PreemptMode=REQUEUE; fi
cat <<EOF
NodeName=node[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$SLURMD_BASE_PORT-$LASTPORT] CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE DefaultTime=00:30:00 State=UP$NO_PREEMPT
EOF
if [ "$GPU_NODES" -gt 0 ]; then cat <<EOF
NodeName=gpu[1-$GPU_NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$GPU_FIRSTPORT-$GPU_LASTPORT] CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:$GPUS_PER_NODE State=UNKNOWN
PartitionName=$GPU_PARTITION Nodes=gpu[1-$GPU_NODES] MaxTime=INFINITE DefaultTime=00:30:00 State=UP$NO_PREEMPT
EOF
fi
if [ "$PREEMPT_NODES" -gt 0 ]; then cat <<EOF
NodeName=pre[1-$PREEMPT_NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$PRE_FIRSTPORT-$PRE_LASTPORT] CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=$PREEMPT_PARTITION Nodes=pre[1-$PREEMPT_NODES] MaxTime=INFINITE DefaultTime=00:30:00 State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=$URGENT_PARTITION Nodes=pre[1-$PREEMPT_NODES] MaxTime=INFINITE DefaultTime=00:30:00 State=UP PriorityTier=2 PreemptMode=OFF
EOF
fi
} > "$SLURM_CONF.new"
# gres.conf (read by slurmctld and every slurmd from the directory of slurm.conf): part of the config
{ echo "# generated by cluster/up.sh -- placeholder devices, no real GPUs"
  [ "$GPU_NODES" -gt 0 ] && echo "NodeName=gpu[1-$GPU_NODES] Name=gpu File=$D/dev/gpu[0-$((GPUS_PER_NODE - 1))]"
  true; } > "$D/etc/gres.conf.new"
if [ "$CGROUP" = 1 ]; then
  printf '%s\n' "# generated by cluster/up.sh" CgroupPlugin=cgroup/v1 CgroupMountpoint=/sys/fs/cgroup \
    ConstrainCores=no ConstrainRAMSpace=yes ConstrainSwapSpace=yes AllowedSwapSpace=0 > "$D/etc/cgroup.conf"
  chmod 0644 "$D/etc/cgroup.conf"
fi
CONF_CHANGED=0; GRES_CHANGED=0
if ! cmp -s "$D/etc/gres.conf.new" "$D/etc/gres.conf"; then
  [ -e "$D/etc/gres.conf" ] && cp -p "$D/etc/gres.conf" "$D/etc/gres.conf.prev"
  mv "$D/etc/gres.conf.new" "$D/etc/gres.conf"; GRES_CHANGED=1
else rm -f "$D/etc/gres.conf.new"; fi
chmod 0644 "$D/etc/gres.conf"
if ! cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then
  [ -e "$SLURM_CONF" ] && cp -p "$SLURM_CONF" "$SLURM_CONF.prev"
  mv "$SLURM_CONF.new" "$SLURM_CONF"; CONF_CHANGED=1
else rm -f "$SLURM_CONF.new"; fi
chmod 0644 "$SLURM_CONF"
# a Slurm client without SLURM_CONF looks at /etc/slurm/slurm.conf: point it here unless a real file is there
if [ "$ETC_LINK" != 1 ]; then :
elif [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ]; then ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
else log "WARNING: /etc/slurm/slurm.conf is a regular file, left alone (clients need SLURM_CONF)"; fi
cat > "$D/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
export SLURM_TEST_SSH_CONFIG=$D/client/ssh_config
export SLURM_TEST_SSH_KEY=$D/client/id_ed25519
export SLURM_TEST_USER=$TEST_USER SLURM_TEST_PASS=$TEST_PASS SLURM_TEST_TOTP_SECRET=$TOTP_SECRET
export SLURM_TEST_SSH_PORT=$SSH_PORT SLURM_TEST_SSH_JUMP_PORT=$SSH_JUMP_PORT SLURM_TEST_SSH_OTP_PORT=$SSH_OTP_PORT
EOF
if [ "$PAYLOAD_ENV" = 1 ]; then echo "export SLURM_TEST_PAYLOAD_PYTHON=$D/envs/payload/bin/python" >> "$D/env.sh"
elif [ -n "$PAYLOAD_PYTHON" ]; then echo "export SLURM_TEST_PAYLOAD_PYTHON=$PAYLOAD_PYTHON" >> "$D/env.sh"; fi
runuser -u "$TEST_USER" -- test -r "$SLURM_CONF" || die "$TEST_USER cannot read $SLURM_CONF: every parent of CONFDIR must be o+x"
runuser -u "$TEST_USER" -- test -w "$MUNGE_SOCK" || die "$TEST_USER cannot reach $MUNGE_SOCK"

# ---------------------------------------------------------------- 5. accounting: MariaDB + slurmdbd
if [ "$ACCOUNTING" = dbd ]; then
  install -d -m 0755 -o mysql -g mysql "$D/mysql" "$D/mysql/run"
  install -d -m 0700 -o mysql -g mysql "$D/mysql/data"
  MYSOCK=$D/mysql/run/mysqld.sock
  if pid_alive "$D/mysql/run/mysqld.pid" mariadbd; then log "mariadbd already running"
  else
    port_free_or_die "$MYSQL_PORT" mariadb
    if [ ! -d "$D/mysql/data/mysql" ]; then
      mariadb-install-db --no-defaults --user=mysql --datadir="$D/mysql/data" --auth-root-authentication-method=socket \
        --skip-test-db > "$D/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed, see $D/log/mariadb-install.log"
      log "mariadb datadir initialised"
    fi
    ( cd / && setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$D/mysql/data" --socket="$MYSOCK" \
        --pid-file="$D/mysql/run/mysqld.pid" --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$D/log/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 )
    for ((i=0;i<120;i++)); do mariadb-admin --no-defaults --socket="$MYSOCK" -uroot ping >/dev/null 2>&1 && break; sleep 0.25; done
    pid_alive "$D/mysql/run/mysqld.pid" mariadbd || die "mariadbd did not start, see $D/log/mariadb.err"
    log "mariadbd started (pid $(cat "$D/mysql/run/mysqld.pid"))"
  fi
  mariadb --no-defaults --socket="$MYSOCK" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmdbpass';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  # slurmdbd has no -f: it reads slurmdbd.conf from dirname($SLURM_CONF); must be 0600 and owned by SlurmUser
  cat > "$D/etc/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF
  DBD_CHANGED=0
  if ! cmp -s "$D/etc/slurmdbd.conf.new" "$D/etc/slurmdbd.conf"; then mv "$D/etc/slurmdbd.conf.new" "$D/etc/slurmdbd.conf"; DBD_CHANGED=1
  else rm -f "$D/etc/slurmdbd.conf.new"; fi
  chmod 0600 "$D/etc/slurmdbd.conf"
  if [ $DBD_CHANGED = 1 ] && pid_alive "$D/run/slurmdbd.pid" slurmdbd; then
    kill "$(cat "$D/run/slurmdbd.pid")"; for ((i=0;i<40;i++)); do pid_alive "$D/run/slurmdbd.pid" slurmdbd || break; sleep 0.25; done
  fi
  if pid_alive "$D/run/slurmdbd.pid" slurmdbd; then log "slurmdbd already running"
  else
    port_free_or_die "$DBD_PORT" slurmdbd
    ( cd / && slurmdbd )
    wait_port "$DBD_PORT" slurmdbd 160
    log "slurmdbd started (pid $(cat "$D/run/slurmdbd.pid"))"
  fi
  # associations (sacctmgr talks to slurmdbd only). Create the cluster before slurmctld registers.
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P list account format=account | grep -qx "$TEST_ACCOUNT" || \
    sacctmgr -i add account "$TEST_ACCOUNT" Description=test Organization=test cluster="$CLUSTER" >/dev/null
  for u in "$TEST_USER" root; do
    sacctmgr -n -P list assoc cluster="$CLUSTER" account="$TEST_ACCOUNT" user="$u" format=user | grep -qx "$u" || \
      sacctmgr -i add user "$u" account="$TEST_ACCOUNT" cluster="$CLUSTER" >/dev/null
  done
  log "accounting associations ok"
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd
# Settings that `scontrol reconfigure` applies: when only those changed, running daemons (and the
# jobs of everyone using this shared cluster) are left alone. Anything else needs a restart.
RECONFIGURABLE='^(#|JobAcctGather|SchedulerParameters|DependencyParameters|MinJobAge|KillWait|DefMemPerCPU|SlurmctldDebug|SlurmdDebug|InactiveLimit|ReturnToService)'
# a gres.conf change is a node change: always a restart
[ $GRES_CHANGED = 1 ] && CONF_CHANGED=1
if [ $CONF_CHANGED = 1 ] && [ $GRES_CHANGED = 0 ] && [ -s "$SLURM_CONF.prev" ] && pid_alive "$D/run/slurmctld.pid" slurmctld && \
   cmp -s <(grep -Ev "$RECONFIGURABLE" "$SLURM_CONF.prev") <(grep -Ev "$RECONFIGURABLE" "$SLURM_CONF"); then
  scontrol reconfigure || die "scontrol reconfigure failed (see $D/log/slurmctld.log)"
  log "slurm.conf changed (reconfigurable settings only): scontrol reconfigure, daemons kept"
  CONF_CHANGED=0
fi
# running_jobs: ids of jobs that have processes on the nodes (a restart must not cut them off)
running_jobs() { squeue -h -t R,CG,S -o %A 2>/dev/null | sort -u | tr '\n' ' '; }
# the nodes the running slurmctld knows (the old config may have fewer than the new one)
known_nodes() { sinfo -h -N -o %N 2>/dev/null | sort -u | paste -sd, -; }
if [ $CONF_CHANGED = 1 ] && pid_alive "$D/run/slurmctld.pid" slurmctld; then
  # The cluster is shared: drain the nodes (pending jobs wait, nothing new starts), let running
  # jobs finish, restart, resume. If they do not finish in time, keep the old config for now.
  OLD_NODES=$(known_nodes)
  scontrol update nodename="$OLD_NODES" state=drain reason=cluster-up-restart 2>/dev/null || true
  for ((i=0;i<DRAIN_WAIT_S*2;i++)); do [ -z "$(running_jobs)" ] && break
    [ $((i % 20)) = 0 ] && log "slurm.conf needs a restart: waiting for running jobs: $(running_jobs)"; sleep 0.5; done
  if [ -n "$(running_jobs)" ]; then
    scontrol update nodename="$OLD_NODES" state=resume 2>/dev/null || true
    mv "$SLURM_CONF" "$SLURM_CONF.pending"; cp -p "$SLURM_CONF.prev" "$SLURM_CONF"; CONF_CHANGED=0
    if [ $GRES_CHANGED = 1 ]; then
      if [ -e "$D/etc/gres.conf.prev" ]; then cp -p "$D/etc/gres.conf.prev" "$D/etc/gres.conf"; else rm -f "$D/etc/gres.conf"; fi; fi
    log "WARNING: jobs still running ($(running_jobs)) after ${DRAIN_WAIT_S}s: kept the old slurm.conf;" \
        "the new one ($SLURM_CONF.pending) is applied by the next cluster/up.sh on an idle cluster"
  else
    RESUME_NODES=1
  fi
fi
if [ $CONF_CHANGED = 1 ]; then
  # a changed slurm.conf needs the running Slurm daemons restarted
  for pf in "$D"/run/slurmd-*.pid "$D/run/slurmctld.pid"; do
    [ -e "$pf" ] || continue; comm=slurmd; [[ $pf == *slurmctld* ]] && comm=slurmctld
    if pid_alive "$pf" $comm; then log "slurm.conf changed: stopping $comm ($(cat "$pf"))"; kill "$(cat "$pf")"
      for ((i=0;i<60;i++)); do pid_alive "$pf" $comm || break; sleep 0.25; done; fi
  done
fi
if pid_alive "$D/run/slurmctld.pid" slurmctld; then log "slurmctld already running"
else
  port_free_or_die "$CTLD_PORT" slurmctld
  ( cd / && slurmctld -f "$SLURM_CONF" )
  wait_port "$CTLD_PORT" slurmctld
  log "slurmctld started (pid $(cat "$D/run/slurmctld.pid"))"
fi
for ((n=0;n<${#ALL_NODES[@]};n++)); do   # node1..N on the first ports, then gpu1..M
  nn=${ALL_NODES[$n]}
  if pid_alive "$D/run/slurmd-$nn.pid" slurmd; then continue; fi
  port_free_or_die $((SLURMD_BASE_PORT + n)) "slurmd $nn"
  if [ "$UTS_HOSTNAMES" = 1 ]; then
    ( cd / && unshare --uts sh -c "hostname $nn && exec slurmd -f '$SLURM_CONF' -N $nn" )
  else
    ( cd / && slurmd -f "$SLURM_CONF" -N "$nn" )
  fi
  log "slurmd $nn started"
done
if [ "${RESUME_NODES:-0}" = 1 ]; then   # drained before the restart; the drain survives it
  scontrol update nodename="$OLD_NODES" state=resume 2>/dev/null || true; log "restarted with the new slurm.conf; nodes resumed"
fi
ready=0
for ((i=0;i<240;i++)); do   # up to 60 s for every node to register and be usable
  states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
  bad=$(echo "$states" | awk 'NF==2 && $2 !~ /^(idle|mix|alloc|comp|plnd)$/')
  if [ "${RESUME_NODES:-0}" = 1 ] && [[ $bad == *drain* || $bad == *drng* ]]; then
    scontrol update nodename="$(known_nodes)" state=resume 2>/dev/null || true; fi
  if [ -n "$states" ] && [ -z "$bad" ] && [ "$(echo "$states" | wc -l)" -ge "${#ALL_NODES[@]}" ]; then ready=1; break; fi
  sleep 0.25
done
[ $ready = 1 ] || die "nodes not ready: ${bad:-$states} (see $D/log/slurmd-*.log)"
log "sinfo: $(sinfo -h -o '%P %a %D %t %N' | tr '\n' ' ')"

# ---------------------------------------------------------------- 7. ssh user files
install -d -m 0700 -o "$TEST_USER" -g "$TEST_USER" "$UHOME/.ssh"
if [ -n "$CLIENT_KEY" ] && [ ! -s "$D/client/id_ed25519" ]; then
  install -m 0600 "$CLIENT_KEY" "$D/client/id_ed25519"; install -m 0644 "$CLIENT_KEY.pub" "$D/client/id_ed25519.pub"; fi
[ -s "$D/client/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "$TEST_USER-test" -f "$D/client/id_ed25519"
# append (not overwrite): several CONFDIRs may share the test user
touch "$UHOME/.ssh/authorized_keys"
grep -qxF "$(cat "$D/client/id_ed25519.pub")" "$UHOME/.ssh/authorized_keys" || cat "$D/client/id_ed25519.pub" >> "$UHOME/.ssh/authorized_keys"
chown "$TEST_USER:$TEST_USER" "$UHOME/.ssh/authorized_keys"; chmod 0600 "$UHOME/.ssh/authorized_keys"
if [ "$SSH_EXTRA" = 1 ]; then
  printf '%s\n" RATE_LIMIT 100 30\n" WINDOW_SIZE 3\n" TOTP_AUTH\n' "$TOTP_SECRET" > "$UHOME/.google_authenticator"
  chown "$TEST_USER:$TEST_USER" "$UHOME/.google_authenticator"; chmod 0400 "$UHOME/.google_authenticator"
fi
echo "$TOTP_SECRET" > "$D/client/totp_secret"

# ---------------------------------------------------------------- 8. sshd x3
for k in ed25519 rsa; do [ -s "$D/ssh/ssh_host_${k}_key" ] || ssh-keygen -q -t $k -N '' -f "$D/ssh/ssh_host_${k}_key"; done
# a user CA (private key root-only): tests sign throw-away keys with it to test certificate logins
[ -s "$D/ssh/user_ca" ] || ssh-keygen -q -t ed25519 -N '' -C dagster-hpc-test-user-ca -f "$D/ssh/user_ca"
# the OTP instance runs as "sshd-otp" so that PAM uses /etc/pam.d/sshd-otp (service name = program name)
if [ "$SSH_EXTRA" = 1 ]; then
ln -sfn /usr/sbin/sshd /usr/local/sbin/sshd-otp
cat > /etc/pam.d/sshd-otp <<'EOF'
# written by cluster/up.sh: PAM stack of the test OTP sshd -- one "Verification code:" prompt (TOTP)
auth     required   pam_google_authenticator.so
account  required   pam_permit.so
session  required   pam_permit.so
password required   pam_deny.so
EOF
fi
sshd_common() { cat <<EOF
ListenAddress 127.0.0.1
HostKey $D/ssh/ssh_host_ed25519_key
HostKey $D/ssh/ssh_host_rsa_key
AuthorizedKeysFile .ssh/authorized_keys
TrustedUserCAKeys $D/ssh/user_ca.pub
PermitRootLogin no
AllowUsers $TEST_USER
PubkeyAuthentication yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
SetEnv SLURM_CONF=$SLURM_CONF$([ -n "$LOGIN_PATH" ] && echo " PATH=$LOGIN_PATH:/usr/local/bin:/usr/bin:/bin")
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}
{ echo "Port $SSH_PORT"; echo "PidFile $D/run/sshd-main.pid"; sshd_common
  echo "UsePAM no"; echo "PasswordAuthentication yes"; echo "KbdInteractiveAuthentication no"; } > "$D/ssh/sshd_main.conf.new"
{ echo "Port $SSH_JUMP_PORT"; echo "PidFile $D/run/sshd-jump.pid"; sshd_common
  echo "UsePAM no"; echo "PasswordAuthentication yes"; echo "KbdInteractiveAuthentication no"; } > "$D/ssh/sshd_jump.conf.new"
{ echo "Port $SSH_OTP_PORT"; echo "PidFile $D/run/sshd-otp.pid"; sshd_common
  echo "UsePAM yes"; echo "PasswordAuthentication no"; echo "KbdInteractiveAuthentication yes"
  echo "AuthenticationMethods publickey,keyboard-interactive"; } > "$D/ssh/sshd_otp.conf.new"
start_sshd() { local name=$1 bin=$2 port=$3 comm changed=0; comm=$(basename "$bin")
  local cf=$D/ssh/sshd_$name.conf
  if cmp -s "$cf.new" "$cf"; then rm -f "$cf.new"; else mv "$cf.new" "$cf"; changed=1; fi
  if pid_alive "$D/run/sshd-$name.pid" "$comm"; then
    # reload only on a real change: a HUP re-execs the listener, and a connection attempt by
    # someone else's test in that instant would be refused
    if [ $changed = 1 ]; then kill -HUP "$(cat "$D/run/sshd-$name.pid")"; log "sshd-$name config changed: reloaded"
    else log "sshd-$name already running"; fi
    return; fi
  port_free_or_die "$port" "sshd-$name"
  "$bin" -t -f "$D/ssh/sshd_$name.conf" || die "bad sshd config $D/ssh/sshd_$name.conf"
  "$bin" -f "$D/ssh/sshd_$name.conf" -E "$D/log/sshd-$name.log"
  wait_port "$port" "sshd-$name"; log "sshd-$name started on 127.0.0.1:$port (pid $(cat "$D/run/sshd-$name.pid"))"; }
start_sshd main /usr/sbin/sshd "$SSH_PORT"
SSH_PORTS=("$SSH_PORT")
if [ "$SSH_EXTRA" = 1 ]; then
  start_sshd jump /usr/sbin/sshd "$SSH_JUMP_PORT"
  start_sshd otp /usr/local/sbin/sshd-otp "$SSH_OTP_PORT"
  SSH_PORTS+=("$SSH_JUMP_PORT" "$SSH_OTP_PORT")
else rm -f "$D/ssh/sshd_jump.conf.new" "$D/ssh/sshd_otp.conf.new"; fi
sleep 0.3; for p in "${SSH_PORTS[@]}"; do wait_port "$p" sshd; done

# ---------------------------------------------------------------- 9. client side files
C=$D/client
{ for k in ed25519 rsa; do
    echo "[127.0.0.1]:$SSH_PORT,[127.0.0.1]:$SSH_JUMP_PORT,[127.0.0.1]:$SSH_OTP_PORT,[localhost]:$SSH_PORT,[localhost]:$SSH_JUMP_PORT,[localhost]:$SSH_OTP_PORT $(cut -d' ' -f1,2 "$D/ssh/ssh_host_${k}_key.pub")"
  done; } > "$C/known_hosts"
cat > "$C/ssh_config" <<EOF
# ssh -F $C/ssh_config slurm-main|slurm-jump|slurm-via-jump|slurm-otp
Host slurm-main slurm-jump slurm-via-jump slurm-otp
  User $TEST_USER
  IdentityFile $C/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $C/known_hosts
  StrictHostKeyChecking yes
  ControlPath $C/cm-%C
Host slurm-main
  HostName 127.0.0.1
  Port $SSH_PORT
Host slurm-jump
  HostName 127.0.0.1
  Port $SSH_JUMP_PORT
Host slurm-via-jump
  HostName 127.0.0.1
  Port $SSH_PORT
  ProxyJump slurm-jump
Host slurm-otp
  HostName 127.0.0.1
  Port $SSH_OTP_PORT
EOF
cat > "$C/otp-askpass.sh" <<EOF
#!/bin/sh
# SSH_ASKPASS helper: answers the "Verification code:" prompt with the current TOTP
case "\$1" in
  *erification*) exec oathtool --totp -b "\$(cat '$C/totp_secret')" ;;
  *) echo "otp-askpass: unexpected prompt: \$1" >&2; exit 1 ;;
esac
EOF
chmod 0755 "$C/otp-askpass.sh"

# ---------------------------------------------------------------- 10. pre-deployed payload env
if [ -n "$PAYLOAD_PID" ]; then
  wait "$PAYLOAD_PID" || die "building the payload env failed: see $D/log/payload-env.log, then re-run cluster/up.sh"
  log "$(tail -n 1 "$D/log/payload-env.log")"
fi

# ---------------------------------------------------------------- 11. smoke test over ssh
if [ "$SMOKE" = 1 ]; then
  out=$(ssh -F "$C/ssh_config" -o BatchMode=yes slurm-main '
    j=$(sbatch --parsable -o /dev/null --wrap "hostname") || exit 1
    for i in $(seq 1 120); do s=$(scontrol show job $j 2>/dev/null | grep -o "JobState=[A-Z]*"); [ "$s" = JobState=COMPLETED ] && break; sleep 0.25; done
    echo "$j $s"') || die "smoke test over ssh failed"
  log "smoke: job $out"
fi
log "READY: source $D/env.sh ; ssh -F $C/ssh_config slurm-main squeue   (total $(( ($(date +%s%N) - T0) / 1000000 )) ms)"
