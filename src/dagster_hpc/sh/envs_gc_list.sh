# shellcheck shell=sh
# dagster-hpc env gc, listing half (envs.gc.list_script): every environment entry under ROOT
# with its last use, size and manifest, and the keys that queued/running jobs' scripts name.
# Run as: sh -c "$(cat envs_gc_list.sh)" envs_gc_list.sh ROOT MARK LAST_USED MANIFEST KEY_HEX_CHARS
# Output lines (MARK is a prefix no manifest line starts with): "MARK root ROOT",
# "MARK entry KEY LAST_USED_EPOCH SIZE_KB", the manifest's JSON, "MARK done" per entry,
# "MARK inuse KEY" per key in use, "MARK end".
root=$1 mark=$2 last_used=$3 manifest=$4 key_chars=$5
echo "$mark root $root"
[ -d "$root" ] || { echo "$mark end"; exit 0; }
for d in "$root"/*/; do
  d=${d%/}; k=$(basename "$d"); [ -d "$d" ] || continue
  t=$(stat -c %Y "$d/$last_used" 2>/dev/null || stat -c %Y "$d/$manifest" 2>/dev/null || stat -c %Y "$d")
  s=$(du -sk "$d" 2>/dev/null | cut -f1)
  echo "$mark entry $k $t ${s:-0}"
  # the manifest may lack a final newline
  [ -f "$d/$manifest" ] && cat "$d/$manifest" && echo
  echo "$mark done"
done
# pending/running jobs of this user: which env keys do their scripts name?
squeue --me -h -o %o 2>/dev/null | while read -r cmd; do
  dir=$(dirname "$cmd"); cat "$dir"/*.sh 2>/dev/null
done | grep -o "envs/[0-9a-f]\{$key_chars\}" | sort -u | sed "s|^envs/|$mark inuse |"
echo "$mark end"
