# shellcheck shell=sh
# dagster-hpc runs gc, listing half (runs_gc.list_command): every step run directory under BASE
# with the newest modification time inside it, and (WITH_SQUEUE=1) our jobs' working dirs.
# Run as: sh -c "$(cat runs_gc_list.sh)" runs_gc_list.sh BASE WITH_SQUEUE
# Output lines: "#nobase" (BASE missing, nothing else), "#now EPOCH", "#squeue_rc=RC",
# "#job ID|WORKDIR" per squeue line, "#dir NEWEST_EPOCH PATH" per step run directory.
# POSIX sh (no read -d): run-dir names never contain a newline (see backends' _safe).
base=$1
with_squeue=$2
if [ ! -d "$base" ]; then echo '#nobase'; exit 0; fi
echo "#now $(date +%s)"
if [ "$with_squeue" = 1 ]; then
  out=$(squeue --me --noheader --states=all --format='%i|%Z' 2>&1); echo "#squeue_rc=$?"
  printf '%s\n' "$out" | sed 's/^/#job /'
fi
find "$base" -mindepth 2 -maxdepth 2 -type d | while IFS= read -r d; do
  newest=$(find "$d" -printf '%T@\n' | sort -n | tail -n 1)
  echo "#dir ${newest%.*} $d"
done
