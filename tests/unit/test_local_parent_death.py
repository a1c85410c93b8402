"""Local mode: a job does not outlive a SIGKILLed Dagster process (it cannot be reattached, and a
retry must not find the payload still running beside a new one)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_hpc.backends import local

PAYLOADS = Path(__file__).parent / "payloads"
# Importing Dagster and starting the payload takes a few seconds on the loaded 2-core machine.
START_TIMEOUT_S = 90
# The kernel signals the wrapper at once; the wrapper forwards TERM and records the exit code.
DIE_TIMEOUT_S = 15


def _running(pid: int) -> bool:
    """Alive and not a zombie (orphans may stay unreaped in containers whose init does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not local._DIE_WITH_PARENT, reason="needs util-linux setpriv (Linux)")
def test_local_job_dies_with_a_sigkilled_dagster_process(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    runs = tmp_path / "runs"
    driver = subprocess.Popen(
        [
            sys.executable,
            str(PAYLOADS / "interrupt_driver.py"),
            str(PAYLOADS / "pid_sleeper.py"),
            str(runs),
            str(pids_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not pids_file.exists():
            assert time.monotonic() < deadline and driver.poll() is None, (
                "the payload never started"
            )
            time.sleep(0.05)
        payload_pid = int(pids_file.read_text())
        assert _running(payload_pid)
        os.kill(driver.pid, signal.SIGKILL)  # a crash: no Python cleanup, no cancel path runs
        driver.wait(timeout=DIE_TIMEOUT_S)
        deadline = time.monotonic() + DIE_TIMEOUT_S
        while _running(payload_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(payload_pid), "the payload outlived the Dagster process"
        while not list(runs.glob("*/*/exit_code")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the wrapper records the end a moment after the payload is gone
        (exit_file,) = runs.glob("*/*/exit_code")
        assert exit_file.read_text().strip() == str(128 + signal.SIGTERM)  # the wrapper saw it end
    finally:
        if driver.poll() is None:
            driver.kill()
