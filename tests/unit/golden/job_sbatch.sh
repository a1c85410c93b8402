#!/usr/bin/env bash
#SBATCH --job-name=dagster-hpc
#SBATCH --time=00:10:00
# dagster-hpc job wrapper: runs launch.sh with the run's environment, records its exit code.
set -u
finish() {
  printf '%s\n' "$1" > ./exit_code.tmp && mv -f ./exit_code.tmp ./exit_code
  exit "$1"
}
cd -- /scratch/runs/r1 || { echo "dagster-hpc: cannot enter run directory "/scratch/runs/r1 >&2; exit 97; }
set -a
. ./env.sh || { echo "dagster-hpc: cannot source ./env.sh" >&2; set +a; finish 96; }
set +a
export PYTHONUNBUFFERED=1
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
finish "$rc"
