"""Works for a moment (so sacct has CPU time to report), then fails with exit code 3."""

import sys
import time

print("about to fail", flush=True)
end = time.time() + 1.5
while time.time() < end:
    pass
print("payload error: the input table is empty", file=sys.stderr, flush=True)
sys.exit(3)
