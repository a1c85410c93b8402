#!/usr/bin/env bash
# dagster-hpc session agent: the batch step of a shared allocation (session mode).
#
# usage: agent.sh IDLE_TIMEOUT_S TICK_S [srun step options...]
# Runs in the session directory (the holder job's working directory). Dagster step processes
# stage a step directory (an ordinary dagster-hpc run dir with job.sh) and then drop a request
# file into requests/ (written as .tmp, renamed: never read half-written). For each request the
# agent starts `srun` INSIDE the allocation, so the step belongs to the allocation and not to
# any SSH connection: an SSH outage, or a dead Dagster, never kills a running step.
#
# The agent ends (and with it the allocation) when
#   - a file "stop" exists and no step is running (the run ended), or
#   - no step ran and no request came for IDLE_TIMEOUT_S (Dagster died: no node-hours burnt).
# Before ending it renames requests/ to requests.closed atomically: a step process that writes
# a request after that sees its rename fail and starts a new allocation instead of waiting on
# a dead one. A failing step never ends the allocation.
set -u
idle_timeout=$1
tick=$2
shift 2
step_opts=("$@")

log() { printf '%s agent: %s\n' "$(date +%H:%M:%S)" "$*"; }
now() { date +%s; }

mkdir -p started || exit 97
[ -d requests ] || mkdir requests || exit 97
declare -A pids=()
last=$(now)
log "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: idle timeout ${idle_timeout}s"

start_step() {  # $1: request file; its content: the step directory
  local req=$1 name stepdir
  name=${req##*/}
  stepdir=$(cat -- "$req") || return
  mv -f -- "$req" "started/$name"
  if [ ! -f "$stepdir/job.sh" ]; then
    log "request $name: no job.sh in $stepdir (ignored)"
    return
  fi
  # the step records its own step id (per-step sacct metrics), then runs the ordinary wrapper
  srun "${step_opts[@]}" --job-name="$name" --chdir="$stepdir" \
    bash -c 'printf "%s\n" "$SLURM_STEP_ID" > step_id.tmp && mv -f step_id.tmp step_id; exec bash ./job.sh' \
    > "$stepdir/srun.log" 2>&1 < /dev/null &
  pids[$name]=$!
  log "started step $name (srun pid ${pids[$name]})"
}

while :; do
  for req in requests/*; do
    [ -e "$req" ] || continue
    case $req in *.tmp) continue ;; esac
    start_step "$req"
    last=$(now)
  done
  for name in "${!pids[@]}"; do
    if ! kill -0 "${pids[$name]}" 2>/dev/null; then
      wait "${pids[$name]}"
      log "step $name ended (srun exit $?)"
      unset "pids[$name]"
      last=$(now)
    fi
  done
  if [ ${#pids[@]} -eq 0 ]; then
    reason=""
    if [ -e stop ]; then reason="the run ended (stop file)"
    elif [ $(($(now) - last)) -ge "$idle_timeout" ]; then reason="idle for ${idle_timeout}s"; fi
    if [ -n "$reason" ]; then
      mv requests requests.closed
      late=(requests.closed/*)
      if [ -e "${late[0]}" ] && [ ! -e stop ]; then
        mv requests.closed requests   # a request arrived in the last instant: serve it
        continue
      fi
      log "ending the allocation: $reason"
      exit 0
    fi
  fi
  sleep "$tick"
done
