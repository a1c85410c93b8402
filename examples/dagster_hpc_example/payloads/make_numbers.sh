#!/usr/bin/env bash
# Bash payload: generate a CSV of measurements into $EXAMPLE_DATA_DIR (plain shell, no Pipes).
set -euo pipefail
rows="${1:-10000}"
mkdir -p "$EXAMPLE_DATA_DIR"
out="$EXAMPLE_DATA_DIR/measurements.csv"
echo "generating $rows rows into $out on $(hostname)"
awk -v n="$rows" 'BEGIN {
  srand(42); print "sensor,value";
  for (i = 0; i < n; i++) printf "s%02d,%.4f\n", i % 17, rand() * 100
}' > "$out.tmp"
mv "$out.tmp" "$out"
echo "done: $(wc -l < "$out") lines"
