"""Runs far longer than its time limit (or until cancelled); answers the pre-timeout USR2."""

import signal
import time


def checkpoint(signum, frame):
    print("got USR2: checkpointing before the time limit", flush=True)


signal.signal(signal.SIGUSR2, checkpoint)
print("sleeping", flush=True)
for _ in range(600):
    time.sleep(1)
