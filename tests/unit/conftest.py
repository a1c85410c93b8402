"""Shared unit-test fixtures: the fake Slurm (shell scripts on PATH) and ``wait_until``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from dagster_hpc.backends import slurm as slurm_mod

FAKE_SLURM_BIN = Path(__file__).parent / "fake_slurm"
# How long a unit test waits for a local process to reach a state: generous, because the
# machine running the suite may be loaded; a passing test returns as soon as it is true.
WAIT_TIMEOUT_S = 30.0
WAIT_INTERVAL_S = 0.02

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout_s: float = WAIT_TIMEOUT_S,
    interval_s: float = WAIT_INTERVAL_S,
    what: str = "",
) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail the test naming
    ``what`` when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what or condition}")
        time.sleep(interval_s)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch/squeue/sacct/scancel/sinfo fakes on PATH; returns their state directory (each
    submitted script is kept there as ``job.<id>.sh``, ids from 101)."""
    state = tmp_path / "slurm"
    state.mkdir()
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("PATH", f"{FAKE_SLURM_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a private poll cache
    slurm_mod._PREFLIGHT_CACHE.clear()
    return state
