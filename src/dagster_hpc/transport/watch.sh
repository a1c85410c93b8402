# shellcheck shell=bash
# dagster-hpc: wait on the login node until a job's files change, then print what is new.
# Run as: bash -c "$(cat watch.sh)" dhpc-watch WINDOW_MS CHECK_MS CHECK_MAX_MS FAST_MS FAST_CAP_MS \
#           LINGER_MS MAX_BYTES EXIT_FILE PATH1 OFFSET1 [PATH2 OFFSET2 ...]
# The check period starts at CHECK_MS and grows 1.5x per unchanged check up to CHECK_MAX_MS, but
# stays <= FAST_CAP_MS for the first FAST_MS (a short job's end is seen at once).
# Output: one header line "RC CHECK_MS SIZE1 N1 SIZE2 N2 ...", then N1 bytes of PATH1 from
# OFFSET1, N2 bytes of PATH2 from OFFSET2, ... RC is the exit_code file's content or "-".
# The exit_code file is read BEFORE the logs are looked at: bytes written before it appeared are
# then visible in the same answer (close-to-open shared filesystems), so it is complete.
# Costs: no process while sleeping (read -t on a private pipe), one stat per check, one dd per
# file that grew.
set -u
window=$1 check=$2 check_max=$3 fast=$4 fast_cap=$5 linger=$6 max=$7 exitf=$8
shift 8
paths=() offs=()
while [ "$#" -ge 2 ]; do
  paths+=("$1") offs+=("$2")
  shift 2
done
exec 9<> <(:)
rc=- sizes=()
if [ "$fast" -gt 0 ] && [ "$check" -gt "$fast_cap" ]; then check=$fast_cap; fi

seconds() { printf -v "$1" '%d.%03d' $(($2 / 1000)) $(($2 % 1000)); }

scan() {  # sets rc and sizes; succeeds when the job ended or a file grew
  if [ -r "$exitf" ] && read -r code < "$exitf" && [ -n "$code" ]; then rc=$code; fi
  local out size name i grew=1
  out=$(stat -L -c '%s %n' -- "${paths[@]}" 2>/dev/null)
  for i in "${!paths[@]}"; do sizes[i]=0; done
  while IFS=' ' read -r size name; do
    for i in "${!paths[@]}"; do
      if [ "$name" = "${paths[i]}" ]; then sizes[i]=$size; fi
    done
  done <<< "$out"
  for i in "${!paths[@]}"; do
    if [ "${sizes[i]}" -gt "${offs[i]}" ]; then grew=0; fi
  done
  [ "$rc" != - ] || return "$grew"
}

elapsed=0
while :; do
  if scan; then
    if [ "$rc" = - ] && [ "$linger" -gt 0 ]; then
      # output often comes in a burst with the job's end right behind it: watch the exit_code
      # file alone (no process: a shell builtin) for up to LINGER_MS, then answer for all
      waited=0
      while [ "$waited" -lt "$linger" ] && ! [ -e "$exitf" ]; do
        read -r -t 0.010 -u 9 || true
        waited=$((waited + 10))
      done
      scan || true
    fi
    break
  fi
  [ "$elapsed" -lt "$window" ] || break
  seconds t "$check"
  # shellcheck disable=SC2154 # t is set by seconds (printf -v)
  read -r -t "$t" -u 9 || true
  elapsed=$((elapsed + check))
  check=$((check * 3 / 2))
  [ "$check" -le "$check_max" ] || check=$check_max
  if [ "$elapsed" -lt "$fast" ] && [ "$check" -gt "$fast_cap" ]; then check=$fast_cap; fi
done

header="$rc $check" counts=()
for i in "${!paths[@]}"; do
  n=$((sizes[i] - offs[i]))
  [ "$n" -ge 0 ] || n=0
  [ "$n" -le "$max" ] || n=$max
  counts[i]=$n
  header="$header ${sizes[i]} $n"
done
printf '%s\n' "$header"
for i in "${!paths[@]}"; do
  if [ "${counts[i]}" -gt 0 ]; then
    dd if="${paths[i]}" iflag=skip_bytes,count_bytes skip="${offs[i]}" count="${counts[i]}" \
      bs=1M status=none
  fi
done
