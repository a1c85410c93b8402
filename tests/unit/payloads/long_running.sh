# shellcheck shell=bash
# Records its own pid and its child's, then waits: the interrupt test checks both get stopped.
sleep 300 &
echo "$$ $!" > "$PIDS_FILE.tmp" && mv "$PIDS_FILE.tmp" "$PIDS_FILE"
wait
