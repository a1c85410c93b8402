"""Slurm mode end to end on the real test cluster over real SSH (dg.materialize, in process)."""

import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig
from tests.integration.slurm_support import (
    CREATED_BASES,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    in_background,
    jobs_named,
    live_jobs_named,
    own_record_partition,
    remote,
    slurm_resource,
    staged_run_dirs,
    start_early,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


REPORT = Path(__file__).parents[1] / "unit" / "payloads" / "report.py"


def _asset(name: str, payload, **run_kwargs) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _a(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload, **run_kwargs).get_results()

    return _a


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _materialize(assets, compute_resource, **kw) -> tuple[dg.ExecuteInProcessResult, list]:
    """Materialize and return the result plus the run's whole event log (logs, observations)."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        assets, resources={"compute": compute_resource}, instance=instance, **kw
    )
    return result, instance.all_logs(result.run_id)


def _lines(entries: list) -> list[tuple[float, str]]:
    """(timestamp, line) of every user log line, multi-line events split."""
    return [
        (e.timestamp, line)
        for e in entries
        if e.dagster_event is None and e.user_message
        for line in e.user_message.split("\n")
    ]


def _failure(result: dg.ExecuteInProcessResult):
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    while error.cause is not None and error.cls_name != "SlurmJobError":
        error = error.cause
    return error


def _observed(entries: list) -> dict:
    obs = [
        e
        for e in entries
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert obs, "a failed job must still carry its metrics (as an asset observation)"
    return obs[-1].dagster_event.event_specific_data.asset_observation.metadata


@pytest.fixture(autouse=True, scope="module")
def _start_the_slow_waits(request, _remove_our_run_dirs):
    start_early(request, {"test_timeout_job_is_timeout_with_metrics": "timed_out_run"})


# The 1-minute time limit (Slurm's shortest) ends the job 60-90 s after it starts (slurmctld
# checks limits every ~30 s, then KillWait); bounded so a hang fails the test.
TIMEOUT_RUN_WITHIN_S = 420


@pytest.fixture(scope="module")
def timed_out_run(cluster, _remove_our_run_dirs):
    """A job that runs into its time limit, materialized in the background from the module's
    start (the result: ``(result, entries)`` of ``_materialize``)."""
    res = compute(
        cluster, queue=QueueConfig(time_limit="1", mem="128M", signal_before_timeout="USR2@30")
    )
    asset = _asset(_name("timeout"), PAYLOADS / "sleeper.py")
    with in_background(_materialize, [asset], res, raise_on_error=False) as future:
        yield future


def test_asset_on_slurm_logs_metadata_check_extras_env_and_sacct(cluster) -> None:
    name = _name("report")

    @dg.asset(name=name, check_specs=[dg.AssetCheckSpec("positive", asset=name)])
    def report(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context,
            REPORT,
            extras={"greeting": "hi", "with_check": True},
            extra_env={"MY_SETTING": "s3cret"},
            args=["--flag", "a b"],
        ).get_results()

    result, entries = _materialize([report], compute(cluster), raise_on_error=False)
    logs = [line for _, line in _lines(entries)]
    md = result.asset_materializations_for_node(name)[0].metadata
    assert md["extras_seen"].value == "hi"
    assert md["env_seen"].value == "s3cret"
    assert md["args"].value == "--flag a b"
    assert md["run_id_env"].value == result.run_id
    assert md["slurm/state"].value == "COMPLETED"
    assert md["slurm/exit_code"].value == 0
    assert md["slurm/metrics_available"].value is True
    assert md["slurm/elapsed_s"].value >= 0
    assert md["slurm/alloc_mem_mb"].value == 256
    job_id = md["slurm/job_id"].value
    assert jobs_named(cluster, job_name(name), expect=1) == [(job_id, "COMPLETED")]
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 1 and checks[0].event_specific_data.passed is False
    progress = [m for m in logs if m.startswith("progress ")]
    assert progress == [f"progress {i}" for i in range(5)]
    assert any("[stderr] a warning on stderr" in m for m in logs)
    # the secret went to the 0600 env file only, never into the job script Slurm keeps
    run_dir = md["slurm/run_dir"].value
    listing = remote(
        cluster,
        f"stat -c '%a %n' {run_dir} {run_dir}/env.sh; grep -c s3cret {run_dir}/job.sh || true",
    )
    assert "700 " + run_dir in listing and "600 " + run_dir + "/env.sh" in listing
    assert listing.strip().endswith("0")


def test_sub_second_jobs_report_slurms_final_record(cluster) -> None:
    # A job this short often reaches sacct first as slurmdbd's stand-in row (named "allocation",
    # no partition, already COMPLETED). The settle takes a complete stand-in as final and fills
    # in the partition from slurmctld: the metadata must match the job's own record, which
    # slurmdbd writes a few seconds later.
    names = [_name("subsec"), _name("subsec")]
    assets = [_asset(n, PAYLOADS / "trivial.py") for n in names]
    result, _ = _materialize(assets, compute(cluster, keep_run_dirs="failed"))
    for name in names:
        md = result.asset_materializations_for_node(name)[0].metadata
        job_id = md["slurm/job_id"].value
        assert md["slurm/state"].value == "COMPLETED"
        assert md["slurm/partition"].value == own_record_partition(cluster, job_id) != ""
        # MaxRSS may be absent: the job ends before the first accounting sample (JobAcctGather
        # frequency 2 s on the test cluster); the partition never may.


def test_live_log_lines_arrive_while_the_job_runs(cluster) -> None:
    name = _name("ticker")
    result, entries = _materialize([_asset(name, PAYLOADS / "ticker.py")], compute(cluster))
    finished_at = result.asset_materializations_for_node(name)[0].metadata["finished_at"].value
    ticks = [(ts, line) for ts, line in _lines(entries) if line.startswith("tick ")]
    assert [line.split(" at ")[0] for _, line in ticks] == [f"tick {i}" for i in range(8)]
    first_seen, first_line = ticks[0]
    # the first line reached Dagster seconds before the payload finished, not at the end
    assert first_seen < finished_at - 2.0, (first_seen, finished_at)
    assert first_seen - float(first_line.split(" at ")[1]) < 2.0


def test_failing_job_exit_3_names_state_and_carries_metrics(cluster) -> None:
    name = _name("exit3")
    result, entries = _materialize(
        [_asset(name, PAYLOADS / "exit3.py")], compute(cluster), raise_on_error=False
    )
    assert not result.success
    error = _failure(result)
    assert error.cls_name == "SlurmJobError"
    assert "ended FAILED with exit code 3" in error.message
    assert "payload error: the input table is empty" in error.message
    assert "hint:" in error.message
    md = _observed(entries)
    assert md["slurm/state"].value == "FAILED"
    assert md["slurm/exit_code"].value == 3
    assert md["slurm/metrics_available"].value is True
    assert "slurm/node_hours" in md and "slurm/cpu_efficiency_pct" in md


def test_over_memory_job_is_out_of_memory_with_its_peak(cluster) -> None:
    name = _name("hog")
    res = compute(cluster, queue=QueueConfig(time_limit="5", mem="64M"))
    result, entries = _materialize([_asset(name, PAYLOADS / "hog.py")], res, raise_on_error=False)
    error = _failure(result)
    assert error.cls_name == "SlurmJobError"
    assert "ended OUT_OF_MEMORY" in error.message and "mem" in error.message
    md = _observed(entries)
    assert md["slurm/state"].value == "OUT_OF_MEMORY"
    assert md["slurm/max_rss_mb"].value > 64
    assert md["slurm/mem_efficiency_pct"].value > 100


@pytest.mark.parametrize(
    ("queue", "match"),
    [
        ({"time_limit": "90 minutes"}, "is not a Slurm time"),
        ({"mem": "lots"}, 'e.g. mem="4G"'),
        ({"cpus_per_task": -1}, "cpus_per_task=-1 must be >= 1"),
        ({"account": "proj; rm -rf ~"}, "not a valid Slurm name"),
        ({"extra_directives": ["--comment=$(id)"]}, "cannot be passed safely"),
        ({"partition": "nosuchpartition"}, "unknown partition 'nosuchpartition'.*debug"),
        # no node of the test cluster's partition has 8 GB or 8 CPUs (4000 MB, 4 CPUs each)
        ({"mem": "8G"}, "(?s)asks for 8192 MB per node.*has 4000 MB"),
        ({"cpus_per_task": 8}, "(?s)cpus_per_task=8 but the largest node.*has 4 CPUs"),
    ],
)
def test_bad_input_rejected_before_submit(cluster, queue: dict, match: str) -> None:
    name = _name("bad")
    asset = _asset(name, PAYLOADS / "trivial.py", queue=queue)
    res = compute(cluster)
    with pytest.raises(ConfigError, match=match):
        dg.materialize([asset], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []
    assert jobs_named(cluster, job_name(name)) == []


def test_missing_python_on_the_cluster_rejected_before_submit(cluster) -> None:
    name = _name("nopython")
    res = ComputeResource(
        mode="slurm", slurm=slurm_resource(cluster, python="/nonexistent/bin/python")
    )
    with pytest.raises(ConfigError, match="python '/nonexistent/bin/python' was not found"):
        dg.materialize([_asset(name, PAYLOADS / "trivial.py")], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []
    assert jobs_named(cluster, job_name(name)) == []


def test_per_asset_queue_from_metadata_and_run_argument(cluster) -> None:
    name = _name("queued")

    @dg.asset(name=name, metadata={"dagster-hpc/queue": {"mem": "300M", "time_limit": "4"}})
    def queued(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context, PAYLOADS / "trivial.py", queue={"cpus_per_task": 2}
        ).get_results()

    result = dg.materialize([queued], resources={"compute": compute(cluster)})
    md = result.asset_materializations_for_node(name)[0].metadata
    assert md["slurm/alloc_cpus"].value == 2
    assert md["slurm/alloc_mem_mb"].value == 300
    shown = remote(cluster, f"scontrol show job {md['slurm/job_id'].value}")
    assert "TimeLimit=00:04:00" in shown and "NumCPUs=2" in shown
    assert live_jobs_named(cluster, job_name(name)) == []


def test_pending_reason_and_expected_start_are_logged(cluster) -> None:
    name = _name("pending")
    # --begin keeps the job PENDING (Reason=BeginTime) with a known start time for a few seconds
    asset = _asset(name, PAYLOADS / "trivial.py", queue={"extra_directives": ["--begin=now+6"]})
    result, entries = _materialize([asset], compute(cluster))
    assert result.success
    pending = [line for _, line in _lines(entries) if " is pending " in line]
    assert pending, "the pending state was not logged"
    assert "(reason: BeginTime)" in pending[0] and ", expected start 20" in pending[0], pending[0]


# Last in the module: its job started with the module (timed_out_run) and has been waiting for
# Slurm's time limit while the tests above ran.
@pytest.mark.slow
def test_timeout_job_is_timeout_with_metrics(timed_out_run) -> None:
    result, entries = timed_out_run.result(timeout=TIMEOUT_RUN_WITHIN_S)
    error = _failure(result)
    assert "ended TIMEOUT" in error.message and "time_limit" in error.message
    assert any("got USR2: checkpointing" in line for _, line in _lines(entries))  # forwarded
    md = _observed(entries)
    assert md["slurm/state"].value == "TIMEOUT"
    assert md["slurm/elapsed_s"].value >= 60
