#!/usr/bin/env bash
#SBATCH --requeue
#SBATCH --signal=B:USR2@60
# dagster-hpc job wrapper: runs launch.sh with the run's environment, records its exit code.
set -u
finish() {
  # a full filesystem must not look like success: without the exit_code file, exit non-zero
  printf '%s\n' "$1" > ./exit_code.tmp && mv -f ./exit_code.tmp ./exit_code || {
    echo "dagster-hpc: cannot record exit code $1 in $PWD/exit_code (filesystem full?)" >&2
    exit 95; }
  exit "$1"
}
cd -- /scratch/runs/r1 || { echo "dagster-hpc: cannot enter run directory "/scratch/runs/r1 >&2; exit 97; }
# Slurm may start this script again here (requeue, preemption, node failure): an
# exit_code file is only written for a final outcome, so one found now is an earlier
# attempt's: that outcome stands and the payload does not run twice
if [ -s ./exit_code ]; then read -r done_rc < ./exit_code || done_rc=1; exit "${done_rc:-1}"; fi
attempt=1
if [ -f ./attempts.tsv ]; then
  while IFS=$'\t' read -r kind _rest; do [ "$kind" != start ] || attempt=$((attempt + 1)); done < ./attempts.tsv
fi
printf -v started '%(%s)T' -1
printf 'start\t%s\t%s\t%s\n' "$attempt" "$started" "${SLURMD_NODENAME:-${HOSTNAME:-}}" >> ./attempts.tsv
ended() {
  printf -v now '%(%s)T' -1
  printf 'end\t%s\t%s\t%s\t%s\n' "$attempt" "$now" "$2" "$1" >> ./attempts.tsv
}
if [ "$attempt" -gt 3 ]; then
  echo "dagster-hpc: Slurm started attempt $attempt, but max_requeues=2 allows 3 attempts: the payload is not run again" >> ./stderr.log
  ended exhausted 94; finish 94
fi
set -a
. ./env.sh || { echo "dagster-hpc: cannot source ./env.sh" >&2; set +a; finish 96; }
set +a
export PYTHONUNBUFFERED=1
export DAGSTER_HPC_ATTEMPT="$attempt"
export DAGSTER_HPC_CHECKPOINT_DIR="$PWD/checkpoint"
export DAGSTER_HPC_CHECKPOINT_SIGNAL=USR2
mkdir -p -m 0700 ./checkpoint
# traps first, so a signal that arrives as soon as the payload runs is never lost (the subshell
# below starts with default handlers: bash resets caught traps in subshells)
child="" terminated=0
forward() { [ -n "$child" ] && kill -s "$1" "$child" 2>/dev/null || true; }
trap 'terminated=1; forward TERM' TERM
trap 'forward USR1' USR1
trap 'forward USR2' USR2
# a forked subshell sources the launch script (its `exec` replaces the subshell): no second bash
# start-up on the critical path of every job
( set +u; . ./launch.sh ) >> ./stdout.log 2>> ./stderr.log < /dev/null &
child=$!
while :; do
  wait "$child"
  rc=$?
  # wait returns early (>128) when a trapped signal arrives: keep waiting while the child lives
  kill -0 "$child" 2>/dev/null || break
done
if [ "$rc" = 0 ]; then ended completed 0; finish 0; fi
# SIGTERM came from Slurm (preemption, time limit, scancel): it requeues or ends the job itself
if [ "$terminated" = 1 ]; then ended terminated "$rc"; exit "$rc"; fi
if [ "$rc" != 98 ]; then ended failed "$rc"; finish "$rc"; fi
if [ "$attempt" -gt 2 ]; then
  echo "dagster-hpc: attempt $attempt asked to be requeued, but max_requeues=2 is used up ($attempt attempts)" >> ./stderr.log
  ended exhausted 94; finish 94
fi
# recorded first: Slurm ends this script as soon as the requeue is accepted
ended requeued 98
if [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID" 2>> ./stderr.log; then exit 0; fi
echo "dagster-hpc: attempt $attempt asked to be requeued, but scontrol requeue ${SLURM_JOB_ID:-(no Slurm job)} failed (see above)" >> ./stderr.log
ended requeue-failed 93; finish 93
