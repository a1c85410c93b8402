"""Writes some stderr lines, then exits 3."""

import sys

for i in range(40):
    print(f"diagnostic line {i}", file=sys.stderr)
print("the real reason: input file missing", file=sys.stderr)
sys.exit(3)
