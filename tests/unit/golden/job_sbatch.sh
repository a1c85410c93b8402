#!/usr/bin/env bash
#SBATCH --job-name=dagster-hpc
#SBATCH --time=00:10:00
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
set -a
. ./env.sh || { echo "dagster-hpc: cannot source ./env.sh" >&2; set +a; finish 96; }
set +a
export PYTHONUNBUFFERED=1
export DAGSTER_HPC_ATTEMPT="$attempt"
# traps first, so a signal that arrives as soon as the payload runs is never lost (the subshell
# below starts with default handlers: bash resets caught traps in subshells)
child=""
forward() { [ -n "$child" ] && kill -s "$1" "$child" 2>/dev/null || true; }
trap 'forward TERM' TERM
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
ended exited "$rc"
finish "$rc"
