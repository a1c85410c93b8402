"""sacct/sstat text -> metadata, for success and failure (rows recorded on the test cluster)."""

from __future__ import annotations

import pytest

from dagster_hpc.backends.base import JobState
from dagster_hpc.backends.slurm_errors import final_state, slurm_job_error
from dagster_hpc.metrics import (
    SACCT_FIELDS,
    parse_duration_s,
    parse_sacct,
    parse_size_mb,
    parse_sstat,
    parse_tres,
    sacct_command,
    unavailable_metadata,
)

# Recorded on the test cluster (Slurm 22.05.8, jobacct_gather/linux, OverMemoryKill).
COMPLETED = """\
5|h4m|COMPLETED|0:0|5|1|1|00:00.142|5||billing=1,cpu=1,mem=200M,node=1|node1|debug|None
5.batch|batch|COMPLETED|0:0|5|1|1|00:00.142|5|112004K|cpu=1,mem=200M,node=1|node1||
"""
FAILED_EXIT_3 = """\
6|h4f|FAILED|3:0|0|1|1|00:00.001|0||billing=1,cpu=1,mem=256M,node=1|node1|debug|None
6.batch|batch|FAILED|3:0|0|1|1|00:00.001|0||cpu=1,mem=256M,node=1|node1||
"""
OVER_MEMORY = """\
7|h4o|FAILED|0:9|2|1|1|00:00.001|2||billing=1,cpu=1,mem=50M,node=1|node1|debug|None
7.batch|batch|CANCELLED by 0|0:9|2|1|1|00:00.001|2|316720K|cpu=1,mem=50M,node=1|node1||
"""
TIMEOUT = """\
8|h4t|TIMEOUT|0:0|78|1|1|00:00.001|78||billing=1,cpu=1,mem=256M,node=1|node1|debug|None
8.batch|batch|CANCELLED|0:15|78|1|1|00:00.001|78|2732K|cpu=1,mem=256M,node=1|node1||
"""
GPU_2NODES = """\
42|train|COMPLETED|0:0|3600|2|16|1-08:00:00|57600||billing=16,cpu=16,gres/gpu=8,mem=64G,node=2|gpu[01-02]|gpu|None
42.batch|batch|COMPLETED|0:0|3600|1|8|00:10:00|28800|2G|cpu=8,gres/gpu=4,mem=32G,node=1|gpu01||
42.0|python|COMPLETED|0:0|3590|2|16|1-07:50:00|57440|24G|cpu=16,gres/gpu=8,mem=64G,node=2|gpu[01-02]||
"""


def test_sacct_command_is_windowed_and_quoted() -> None:
    cmd = sacct_command("123")
    assert cmd.startswith("sacct --parsable2 --noheader --jobs 123 --starttime now-7days --format ")
    assert cmd.endswith(",".join(SACCT_FIELDS))
    assert "'1; rm'" in sacct_command("1; rm")


def test_completed_job_metadata() -> None:
    m = parse_sacct(COMPLETED, "5")
    assert m is not None
    md = m.to_metadata()
    assert md["slurm/job_id"] == "5"
    assert md["slurm/state"] == "COMPLETED"
    assert md["slurm/exit_code"] == 0
    assert md["slurm/elapsed_s"] == 5
    assert md["slurm/node_hours"] == round(5 / 3600, 6)
    assert md["slurm/cpu_efficiency_pct"] == round(100 * 0.142 / 5, 1)
    assert md["slurm/max_rss_mb"] == round(112004 / 1024, 1)
    assert md["slurm/mem_efficiency_pct"] == round(100 * (112004 / 1024) / 200, 1)
    assert md["slurm/alloc_tres"] == "billing=1,cpu=1,mem=200M,node=1"
    assert md["slurm/gpus"] == 0
    assert md["slurm/metrics_available"] is True
    assert not m.over_memory


def test_failed_job_still_has_metrics_and_exit_code() -> None:
    m = parse_sacct(FAILED_EXIT_3, "6")
    assert m is not None and m.state == "FAILED" and m.exit_code == 3
    assert "slurm/max_rss_mb" not in m.to_metadata()  # too short to be sampled: left out, not 0
    assert final_state(3, m, JobState.FAILED) is JobState.FAILED


def test_over_memory_kill_is_recognised_on_22_05() -> None:
    m = parse_sacct(OVER_MEMORY, "7")
    assert m is not None
    assert m.state == "FAILED" and m.signal == 9
    assert m.over_memory
    assert m.step_states == {"7.batch": "CANCELLED"}
    assert m.mem_efficiency_pct == pytest.approx(100 * (316720 / 1024) / 50)
    assert final_state(None, m, JobState.FAILED) is JobState.OUT_OF_MEMORY


def test_timeout_wins_over_the_wrappers_exit_code() -> None:
    m = parse_sacct(TIMEOUT, "8")
    assert m is not None and m.state == "TIMEOUT" and m.signal == 15 and not m.over_memory
    # the wrapper forwarded SIGTERM and recorded 143; the truth is the time limit
    assert final_state(143, m, JobState.TIMEOUT) is JobState.TIMEOUT


def test_gpu_multi_node_aggregation() -> None:
    m = parse_sacct(GPU_2NODES, "42")
    assert m is not None
    assert m.gpus == 8
    assert m.node_hours == 2.0
    assert m.max_rss_mb == 24 * 1024
    assert m.mem_efficiency_pct == pytest.approx(100 * 24 / 32)
    assert m.cpu_efficiency_pct == pytest.approx(100 * (32 * 3600) / 57600)
    typed = parse_tres("cpu=4,gres/gpu:a100=2,gres/gpu:v100=1")
    assert typed == {"cpu": "4", "gres/gpu:a100": "2", "gres/gpu:v100": "1"}


def test_accounting_disabled_is_flagged_unavailable() -> None:
    assert parse_sacct("sacct: error: Slurm accounting storage is disabled\n", "9") is None
    md = unavailable_metadata("9", "Slurm accounting storage is disabled")
    assert md == {
        "slurm/job_id": "9",
        "slurm/metrics_available": False,
        "slurm/metrics_unavailable_reason": "Slurm accounting storage is disabled",
    }


def test_job_without_rows_yet() -> None:
    assert parse_sacct("", "10") is None
    assert parse_sacct(COMPLETED, "55") is None  # 5 is not 55: no prefix confusion


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00.142", 0.142), ("01:02", 62), ("01:00:05", 3605), ("1-08:00:00", 115200), ("x", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_sizes() -> None:
    assert parse_size_mb("1024K") == 1
    assert parse_size_mb("2G") == 2048
    assert parse_size_mb("1048576") == 1  # sacct: bare numbers are bytes
    assert parse_size_mb("512", bare_unit_mb=True) == 512  # TRES: bare numbers are MB
    assert parse_size_mb("") is None


def test_sstat_live_rows() -> None:
    text = "20.batch|163044K|00:00:01|1\n20.0|2G|00:01:00|2\n"
    assert parse_sstat(text) == {
        "slurm/live_max_rss_mb": 2048.0,
        "slurm/live_ave_cpu_s": 60.0,
        "slurm/live_tasks": 3,
    }
    assert parse_sstat("") == {}


@pytest.mark.parametrize(
    ("state", "exit_code", "expected"),
    [
        (JobState.FAILED, 3, "ended FAILED with exit code 3"),
        (JobState.OUT_OF_MEMORY, None, "ended OUT_OF_MEMORY"),
        (JobState.TIMEOUT, 143, "ended TIMEOUT"),
        (JobState.CANCELLED, None, "ended CANCELLED"),
        (JobState.NODE_FAIL, None, "ended NODE_FAIL"),
        (JobState.PREEMPTED, None, "ended PREEMPTED"),
    ],
)
def test_errors_name_state_job_stderr_and_hint(
    state: JobState, exit_code: int | None, expected: str
) -> None:
    tail = "\n".join(f"line {i}" for i in range(30))
    err = slurm_job_error(
        state=state,
        job_id="77",
        exit_code=exit_code,
        stderr_tail=tail,
        run_dir="/r",
        cluster="u@h:22",
        metadata={"slurm/job_id": "77"},
    )
    text = str(err)
    assert "Slurm job 77 on u@h:22" in text and expected in text
    assert "line 29" in text and "line 9\n" not in text  # only the tail
    assert "hint: " in text
    assert (
        err.state == state.value and err.job_id == "77" and err.metadata == {"slurm/job_id": "77"}
    )


def test_final_state_without_accounting_uses_exit_file_then_scheduler() -> None:
    assert final_state(0, None, JobState.UNKNOWN) is JobState.COMPLETED
    assert final_state(2, None, JobState.COMPLETED) is JobState.FAILED
    assert final_state(None, None, JobState.CANCELLED) is JobState.CANCELLED
    assert final_state(None, None, JobState.RUNNING) is JobState.UNKNOWN


def test_exit_code_above_128_names_the_signal() -> None:
    err = slurm_job_error(
        state=JobState.FAILED, job_id="5", exit_code=140, stderr_tail="", run_dir="/r", cluster="c"
    )
    assert "exit code 140 (the payload was killed by SIGUSR2)" in str(err)


def test_a_session_steps_own_record_is_final_without_a_partition() -> None:
    """sacct never gives a step row (``<job>.<step>``, a session step) a partition: its record is
    the step's own, not slurmdbd's stand-in, so the settle loop takes it at once (it waited out
    its 10 s timeout for every session step). A job row without a partition still is not final."""
    step = "832.3|session_0-da1bc9|COMPLETED|0:0|1|1|1|00:00.081|1|5000K|cpu=1,mem=1G,node=1|node1||None\n"
    metrics = parse_sacct(step, "832.3")
    assert metrics is not None and metrics.from_job_record and metrics.max_rss_mb
    stand_in = step.replace("832.3|session_0-da1bc9", "832|allocation")
    job = parse_sacct(stand_in, "832")
    assert job is not None and not job.from_job_record
