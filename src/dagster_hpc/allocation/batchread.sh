# shellcheck shell=bash
# dagster-hpc: read many growing files on the login node in ONE round trip (the task files of
# an array, a hetjob or a session).
# Run as: bash -c "$(cat batchread.sh)" dhpc-batchread MAX_BYTES PATH1 OFFSET1 [PATH2 OFFSET2 ...]
# Output, base64-encoded on one line: a header line with one word per PATH, "-" (missing or not
# longer than its OFFSET), "t" (read whole: it is in the tar stream at the end) or N (N bytes
# from OFFSET follow, in PATH order); then those bytes; then one tar stream of the "t" files.
# Costs: one stat for all files, one dd per file read from an offset > 0 and ONE tar for every
# file read from its start (a finished task's files are read whole once): not three processes
# per file (tail | head | base64), which made a 100-task array's reads cost ~1.5 s of CPU each.
set -u
max=$1
shift
paths=() offs=()
while [ "$#" -ge 2 ]; do
  paths+=("$1") offs+=("$2")
  shift 2
done
declare -A size=()
while IFS=' ' read -r s name; do
  size[$name]=$s
done < <(stat -L -c '%s %n' -- "${paths[@]}" 2>/dev/null)
words=() whole=() counts=()
for i in "${!paths[@]}"; do
  s=${size[${paths[i]}]-0} off=${offs[i]}
  counts[i]=0
  if [ "$s" -le "$off" ]; then
    words+=(-)
  elif [ "$off" -eq 0 ] && [ "$s" -le "$max" ]; then
    words+=(t)
    whole+=("${paths[i]}")
  else
    n=$((s - off))
    [ "$n" -le "$max" ] || n=$max
    words+=("$n")
    counts[i]=$n
  fi
done
{
  printf '%s\n' "${words[*]}"
  for i in "${!paths[@]}"; do
    if [ "${counts[i]}" -gt 0 ]; then
      dd if="${paths[i]}" iflag=skip_bytes,count_bytes skip="${offs[i]}" count="${counts[i]}" \
        bs=1M status=none
    fi
  done
  if [ "${#whole[@]}" -gt 0 ]; then
    # a file that grows while tar reads it is cut at its stat size (the rest comes next time)
    tar -cf - -- "${whole[@]}" 2>/dev/null || true
  fi
} | base64 -w0
echo
