# shellcheck shell=bash
# dagster-hpc: read many growing files on the login node in ONE round trip (the task files of
# an array, a hetjob or a session).
# Run as: bash -c "$(cat batchread.sh)" dhpc-batchread MAX_BYTES DIR NAME1 OFFSET1 [NAME2 OFFSET2 ...]
# NAMEs are relative to DIR (the files' common directory: short arguments and tar member names,
# ~40 KB less per tick of a 100-task array). Output, base64-encoded on one line: a header line
# with one word per NAME, "-" (missing or not longer than its OFFSET), "t" (read whole: it is in
# the tar stream at the end) or N (N bytes from OFFSET follow, in NAME order); then those bytes;
# then one tar stream of the "t" files.
# Costs: one stat for all files, one dd per file read from an offset > 0 and ONE tar for every
# file read from its start (a finished task's files are read whole once): not three processes
# per file (tail | head | base64), which made a 100-task array's reads cost ~1.5 s of CPU each.
# The arguments are walked by index: `shift 2` copies every remaining argument each time
# (quadratic: 50 ms of CPU for 400 absolute paths, on every tick).
set -u
max=$1 dir=$2
shift 2
args=("$@")
n=$#
paths=() offs=()
for ((i = 0; i + 1 < n; i += 2)); do
  paths+=("${args[i]}") offs+=("${args[i + 1]}")
done
declare -A size=()
stats=()
# a missing DIR (nothing staged yet) reads as every file missing; mapfile, not `while read`
# (read takes a pipe one byte at a time)
if cd -- "$dir" 2>/dev/null; then
  mapfile -t stats < <(stat -L -c '%s %n' -- "${paths[@]}" 2>/dev/null)
fi
for line in "${stats[@]}"; do
  size[${line#* }]=${line%% *}
done
words=() whole=() counts=()
for i in "${!paths[@]}"; do
  s=${size[${paths[i]}]-0} off=${offs[i]}
  counts[i]=0
  if ((s <= off)); then
    words+=(-)
  elif ((off == 0 && s <= max)); then
    words+=(t)
    whole+=("${paths[i]}")
  else
    c=$((s - off))
    ((c <= max)) || c=$max
    words+=("$c")
    counts[i]=$c
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
