"""The text of RayLauncher's launch script: bash and Python templates plus the timing constants
they embed. Pure data; ``ray.py`` fills them in (every value quoted there)."""

# Seconds every node may take to start and join before the run fails: `ray start` takes
# 5-20 s per node on a loaded node (GCS, raylet, dashboard agent), all nodes start in parallel.
JOIN_TIMEOUT_S = 120
# Seconds Ray gets after TERM to stop (raylet and GCS flush logs, free shared memory) before
# the rest of its process group is killed: bounded, so a hung Ray never holds the allocation.
STOP_GRACE_S = 10
# How often the shutdown checks whether a process group is gone (fast: it is on the job's
# critical path after the payload ends).
STOP_POLL_S = 0.1
# How often the join wait reads the start logs (a few lines each: cheap, and on the job's
# critical path before the payload starts).
JOIN_POLL_S = 0.1
# What `ray start` prints once its node is registered in the GCS (Ray's Node() waits for its
# node info there before the CLI prints it): one line per node that joined.
RAY_STARTED_LINE = "Ray runtime started."
# Longest temp dir root under which Ray's Unix sockets stay within the 107-byte limit
# (Ray adds /<node>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store, ~75 bytes);
# longer run directories put the temp dirs in ${TMPDIR:-/tmp}/dhpc-ray-<job id> instead.
RAY_TEMP_ROOT_MAX = 32
# Exit code of launch.sh when the Ray cluster did not come up (payload never started).
EXIT_RAY_NOT_UP = 93

# Stops process groups: each argument is SIGNAL:PGID:TICKS (a `setsid` leader). The signal
# first (TERM for a Ray node; 0, i.e. none, for the workers' srun, which the stop file ends),
# then each group still alive after its TICKS polls gets KILL.
STOP_FUNCTION = """\
dhpc_stop_groups() {{
  local e sig g n t live
  for e in "$@"; do IFS=: read -r sig g n <<< "$e"; kill -s "$sig" -- "-$g" 2>/dev/null || true; done
  for ((t = 0; ; t++)); do
    live=0
    for e in "$@"; do
      IFS=: read -r sig g n <<< "$e"
      kill -0 -- "-$g" 2>/dev/null || continue
      if [ "$t" -lt "$n" ]; then live=1; continue; fi
      echo "dagster-hpc: Ray process group $g still running after the stop request and its grace period: killing it" >&2
      kill -KILL -- "-$g" 2>/dev/null || true
    done
    [ "$live" = 0 ] && return 0
    sleep {poll}
  done
}}
"""

# After a node stopped: a temp dir outside the run directory (too long for Ray's sockets) gives
# Ray's logs to the run directory (ray-cluster/logs-<node>, a few hundred KB) and is removed.
KEEP_LOGS_FUNCTION = """\
dhpc_keep_logs() {
  [ "$1" = "$2/$3" ] && return 0
  cp -r "$1/session_latest/logs" "$2/logs-$3" 2>/dev/null || true
  rm -rf -- "$1"
  rmdir -- "${1%/*}" 2>/dev/null || true
}
"""

# How often a worker node checks for the stop file (shutdown latency vs. stat calls on the
# shared filesystem).
STOP_FILE_POLL_S = 1
# Extra seconds the batch step gives the workers' srun beyond their own stop (stop file poll +
# grace): the worker's KILL, its task exit and srun's end of step. Only then is srun killed
# (Slurm then ends the step's processes itself, asynchronously).
WORKER_STOP_MARGIN_S = 3
# Created by the batch step when the payload has ended: the workers stop their Ray nodes.
# Not a signal: srun answers TERM with KILL for the whole step, and the signals it forwards
# (USR1 ...) reach every process of the step, Ray's own included, whose default is to die.
STOP_FILE = ".stop"

# One worker node (run by srun on every node but the first): its own Ray node in its own
# process group, stopped like the head once the stop file appears.
WORKER = """\
dhpc_ray=$1 dhpc_address=$2 dhpc_stop_file=$3/{stop_file} dhpc_dir=$4/${{SLURMD_NODENAME:-$(hostname)}}
{stop}{keep_logs}dhpc_args=()
{node_ip}
setsid "$dhpc_ray" start --block --address="$dhpc_address" --temp-dir="$dhpc_dir" \\
  ${{SLURM_CPUS_ON_NODE:+--num-cpus=$SLURM_CPUS_ON_NODE}} ${{SLURM_GPUS_ON_NODE:+--num-gpus=$SLURM_GPUS_ON_NODE}} \\
  "${{dhpc_args[@]}}" {extra}&
dhpc_pid=$!
trap 'dhpc_stop_groups "TERM:$dhpc_pid:{ticks}"; exit 0' TERM INT
while kill -0 "$dhpc_pid" 2>/dev/null && [ ! -e "$dhpc_stop_file" ]; do sleep {poll}; done
dhpc_stop_groups "TERM:$dhpc_pid:{ticks}"
dhpc_keep_logs "$dhpc_dir" "$3" "${{dhpc_dir##*/}}"
"""

# Waits until `want` nodes have started (bounded), failing early when a start process died.
# It counts RAY_STARTED_LINE in the start logs (the head's, and the workers' through srun)
# instead of asking the GCS: no `import ray` and no driver's connect and disconnect (about a
# second of CPU and latency on every job's critical path), only a check that the interpreter
# has the ray package the payload will import.
JOIN_WAIT = """\
import importlib.util, os, sys, time
if importlib.util.find_spec("ray") is None:
    sys.exit(f"dagster-hpc: RayLauncher needs the ray package in {sys.executable}: install ray into the job's environment")
want, timeout, logs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:5]
pids = [int(p) for p in sys.argv[5:]]
deadline = time.monotonic() + timeout
while True:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"dagster-hpc: a Ray start process (pid {pid}) exited before the cluster was up")
    started = 0
    for log in logs:
        try:
            with open(log, errors="replace") as fh:
                started += sum(1 for line in fh if line.rstrip().endswith("STARTED"))
        except FileNotFoundError:
            pass
    if started >= want:
        sys.exit(0)
    if time.monotonic() > deadline:
        sys.exit(f"dagster-hpc: {started} of {want} Ray nodes joined within {timeout:g} s")
    time.sleep(POLL)
"""

BODY = """\
dhpc_py={python}
dhpc_ray={ray}
dhpc_ray_dir="$PWD/ray-cluster"  # the launcher's logs of the Ray processes (head.log, workers.log)
mkdir -p "$dhpc_ray_dir"
dhpc_temp=$dhpc_ray_dir  # every node's Ray temp dir (sessions, Ray's own logs) is a subdirectory
# Ray's Unix socket paths live under the temp dir and must stay within 107 bytes
if [ "${{#dhpc_temp}}" -gt {temp_max} ]; then dhpc_temp="${{TMPDIR:-/tmp}}/dhpc-ray-${{SLURM_JOB_ID:-$$}}"; fi
# the payload has ended when Ray is stopped: skip Ray's drain on TERM (default 30 s, meant for Serve)
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${{RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}}
{stop}{keep_logs}dhpc_payload=""
dhpc_groups=()
dhpc_shutdown() {{
  touch "$dhpc_ray_dir/{stop_file}"
  [ "${{#dhpc_groups[@]}}" -eq 0 ] || dhpc_stop_groups "${{dhpc_groups[@]}}"
  dhpc_groups=()
  dhpc_keep_logs "$dhpc_temp/head" "$dhpc_ray_dir" head
}}
dhpc_on_signal() {{
  if [ -n "$dhpc_payload" ]; then kill -s "$1" "$dhpc_payload" 2>/dev/null || true; return; fi
  # cancelled while Ray starts: stop what started, do not run the payload
  [ "$1" = TERM ] || [ "$1" = INT ] || return 0
  dhpc_shutdown
  [ "$1" = TERM ] && exit 143
  exit 130
}}
{traps}
if [ -n "${{SLURM_JOB_ID:-}}" ]; then
  dhpc_nnodes=${{SLURM_JOB_NUM_NODES:-1}}
  dhpc_head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
else
  dhpc_nnodes=1  # no Slurm allocation (local mode): a one-node Ray cluster on this machine
  dhpc_head=127.0.0.1
fi
dhpc_head_args=()
{head_ip}
dhpc_port=$("$dhpc_py" -c {free_port})
dhpc_address="$dhpc_head_ip:$dhpc_port"
# the head runs beside the payload on the first node, in its own process group
setsid "$dhpc_ray" start --head --block --port="$dhpc_port" --temp-dir="$dhpc_temp/head" \\
  ${{SLURM_CPUS_ON_NODE:+--num-cpus=$SLURM_CPUS_ON_NODE}} ${{SLURM_GPUS_ON_NODE:+--num-gpus=$SLURM_GPUS_ON_NODE}} \\
  "${{dhpc_head_args[@]}}" {extra}> "$dhpc_ray_dir/head.log" 2>&1 < /dev/null &
dhpc_groups+=("TERM:$!:{ticks}")
dhpc_pids=("$!")
if [ "$dhpc_nnodes" -gt 1 ]; then
  dhpc_workers=$((dhpc_nnodes - 1))
  dhpc_srun=({srun} --nodes="$dhpc_workers" --ntasks="$dhpc_workers" --exclude="$dhpc_head")
  setsid "${{dhpc_srun[@]}}" -- bash -c {worker} dhpc-ray-worker "$dhpc_ray" "$dhpc_address" "$dhpc_ray_dir" "$dhpc_temp" \\
    > "$dhpc_ray_dir/workers.log" 2>&1 < /dev/null &
  dhpc_groups+=("0:$!:{worker_ticks}")
  dhpc_pids+=("$!")
fi
# exported only now: the `ray start` processes must not mistake it for a cluster to join
export RAY_ADDRESS="$dhpc_address"
if ! "$dhpc_py" -c {join_wait} "$dhpc_nnodes" {join_timeout} "$dhpc_ray_dir/head.log" "$dhpc_ray_dir/workers.log" "${{dhpc_pids[@]}}"; then
  echo "dagster-hpc: the Ray cluster ($dhpc_nnodes nodes, head $RAY_ADDRESS) did not come up; Ray's logs: $dhpc_ray_dir/head.log, $dhpc_ray_dir/workers.log" >&2
  dhpc_shutdown
  exit {exit_not_up}
fi
{command} &
dhpc_payload=$!
while :; do
  wait "$dhpc_payload"
  dhpc_rc=$?
  # a forwarded signal ends `wait` early (>128): keep waiting while the payload lives
  kill -0 "$dhpc_payload" 2>/dev/null || break
done
dhpc_payload=""
dhpc_shutdown
exit "$dhpc_rc"
"""
