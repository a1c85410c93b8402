"""runs gc: ages, the pure plan, the real shell on local directories (with fake squeue for the
"job still in squeue" rule) and the CLI."""

import os
import time
from pathlib import Path

import pytest

from dagster_hpc.backends.slurm import base_dir_expr
from dagster_hpc.cli import main
from dagster_hpc.errors import ConfigError, RemoteCommandError
from dagster_hpc.runs_gc import Listing, gc_run_dirs, parse_age, plan_gc
from dagster_hpc.transport.local import LocalTransport

FAKE_BIN = Path(__file__).parent / "fake_slurm"
DAY = 86400


def test_parse_age() -> None:
    assert parse_age("7d") == 7 * DAY
    assert parse_age("12h") == 12 * 3600
    assert parse_age("2w") == 14 * DAY
    assert parse_age("1.5m") == 90
    for bad in ("7", "seven days", "-1d", "7y", ""):
        with pytest.raises(ConfigError, match="is not an age: use a number and a unit"):
            parse_age(bad)


def test_plan_active_beats_age_and_recent_stays() -> None:
    listing = Listing(
        now=100 * DAY,
        dirs={
            "/b/r1/old": 1.0,
            "/b/r1/active": 1.0,
            "/b/r2/sub-active": 1.0,
            "/b/r2/recent": 100 * DAY - 60,
        },
        active_workdirs=frozenset({"/b/r1/active", "/b/r2/sub-active/work"}),
    )
    plan = plan_gc(listing, older_than_s=7 * DAY)
    assert plan.remove == ["/b/r1/old"]
    assert plan.active == ["/b/r1/active", "/b/r2/sub-active"]
    assert plan.recent == ["/b/r2/recent"]


def test_unanswered_squeue_removes_nothing() -> None:
    listing = Listing(
        now=100 * DAY, dirs={"/b/r1/old": 1.0}, active_workdirs=frozenset(), squeue_error="timeout"
    )
    with pytest.raises(
        RemoteCommandError, match="never removes a run dir without knowing which jobs still run"
    ):
        plan_gc(listing, older_than_s=DAY)


def _run_dir(base: Path, run: str, step: str, *, age_s: float) -> Path:
    d = base / run / step
    d.mkdir(parents=True)
    (d / "stdout.log").write_text("x\n")
    stamp = time.time() - age_s
    for p in (d / "stdout.log", d):
        os.utime(p, (stamp, stamp))
    return d


def test_local_gc_through_the_shell(tmp_path: Path) -> None:
    base = tmp_path / "run's base"  # needs quoting
    old = _run_dir(base, "run1", "step-a", age_s=10 * DAY)
    recent = _run_dir(base, "run1", "step-b", age_s=60)
    lone = _run_dir(base, "run2", "step-c", age_s=10 * DAY)
    transport = LocalTransport()
    dry = gc_run_dirs(
        transport, base_dir_expr(str(base)), older_than_s=7 * DAY, with_squeue=False, dry_run=True
    )
    assert dry.remove == [str(old), str(lone)] and old.exists()
    plan = gc_run_dirs(transport, base_dir_expr(str(base)), older_than_s=7 * DAY, with_squeue=False)
    assert plan.remove == [str(old), str(lone)] and plan.recent == [str(recent)]
    assert not old.exists() and not lone.exists() and recent.exists()
    assert not (base / "run2").exists()  # its only step dir went, so did the run-id dir
    assert (base / "run1").exists()
    assert (
        gc_run_dirs(
            transport, base_dir_expr(str(tmp_path / "missing")), older_than_s=DAY, with_squeue=False
        ).remove
        == []
    )


def test_run_dir_of_a_job_in_squeue_is_never_touched(tmp_path: Path, fake_slurm: Path) -> None:
    state = fake_slurm
    base = tmp_path / "runs"
    busy = _run_dir(base, "run1", "busy", age_s=30 * DAY)  # a quiet month-long job
    idle = _run_dir(base, "run1", "idle", age_s=30 * DAY)
    (state / "state.55").write_text("RUNNING\n")
    (state / "wd.55").write_text(f"{busy}\n")
    plan = gc_run_dirs(
        LocalTransport(), base_dir_expr(str(base)), older_than_s=7 * DAY, with_squeue=True
    )
    assert plan.active == [str(busy)] and plan.remove == [str(idle)]
    assert busy.exists() and not idle.exists()


def test_cli_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("DAGSTER_HPC_SSH_HOST", raising=False)
    old = _run_dir(tmp_path, "r", "s-old", age_s=8 * DAY)
    assert (
        main(["runs", "gc", "--older-than", "7d", "--local-base", str(tmp_path), "--dry-run"]) == 0
    )
    assert old.exists() and f"would remove {old}" in capsys.readouterr().out
    assert main(["runs", "gc", "--older-than", "7d", "--local-base", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not old.exists() and f"removed {old}" in out and "removed 1 run dir(s)" in out
    assert main(["runs", "gc", "--older-than", "soon", "--local-base", str(tmp_path)]) == 1
    assert "'soon' is not an age" in capsys.readouterr().err


def test_cli_cluster_here_checks_squeue(
    tmp_path: Path, fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    state = fake_slurm
    base = tmp_path / "cluster-runs"
    busy = _run_dir(base, "r", "busy", age_s=9 * DAY)
    idle = _run_dir(base, "r", "idle", age_s=9 * DAY)
    (state / "state.9").write_text("PENDING\n")
    (state / "wd.9").write_text(f"{busy}\n")
    args = [
        "runs",
        "gc",
        "--older-than",
        "7d",
        "--no-local",
        "--cluster-here",
        "--remote-base",
        str(base),
    ]
    assert main(args) == 0
    assert busy.exists() and not idle.exists()
    assert "kept 1 with a job in squeue" in capsys.readouterr().out
