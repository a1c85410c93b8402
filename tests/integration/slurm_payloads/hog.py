"""Holds ~300 MB for a while (the test asks for 64 MB): Slurm must kill it for memory."""

import time

blob = bytearray(300 * 1024 * 1024)
for i in range(0, len(blob), 4096):
    blob[i] = 1  # touch every page so it counts in RSS
print("holding 300 MB", flush=True)
time.sleep(60)
