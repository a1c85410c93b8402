"""SlurmBackend through the real facade against a transport double: LocalTransport (this machine
as the login node) with fake sbatch/squeue/sacct/scancel/sinfo on PATH (tests/unit/fake_slurm),
which run the job script in the background like a one-node scheduler."""

import stat
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import _dagster_adapter
from dagster_hpc.backends import slurm as slurm_mod
from dagster_hpc.backends.base import JobHandle, JobState
from dagster_hpc.backends.slurm import SlurmBackend
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import DRY_RUN_DIR, ComputeResource
from dagster_hpc.errors import (
    AuthenticationError,
    CancelNotConfirmedError,
    ConfigError,
    HostKeyError,
    SlurmJobError,
    TransportError,
)
from dagster_hpc.jobscript import render_job_script
from dagster_hpc.queue import QueueConfig
from dagster_hpc.transport.local import LocalTransport
from tests.unit.golden import assert_golden

FAKE_BIN = Path(__file__).parent / "fake_slurm"
PAYLOADS = Path(__file__).parent / "payloads"


def calls(state: Path, command: str) -> list[str]:
    log = state / "calls.log"
    return (
        [line for line in log.read_text().splitlines() if line.startswith(command + " ")]
        if log.exists()
        else []
    )


def _resource(tmp_path: Path, keep_run_dirs: str = "failed", **kw) -> ComputeResource:
    kw.setdefault("queue", QueueConfig(time_limit="5", mem="256M"))
    return ComputeResource(
        mode="slurm",
        keep_run_dirs=keep_run_dirs,
        slurm=SlurmResource(remote_base_dir=str(tmp_path / "remote"), python=sys.executable, **kw),
    )


def _asset(payload, **run_kwargs) -> dg.AssetsDefinition:
    @dg.asset(name="fake_slurm_asset")
    def _a(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload, **run_kwargs).get_results()

    return _a


def test_materialize_through_fake_slurm(fake_slurm: Path, tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_asset(PAYLOADS / "report.py", extras={"greeting": "hi"})],
        resources={"compute": _resource(tmp_path, keep_run_dirs="always")},
        instance=instance,
    )
    md = result.asset_materializations_for_node("fake_slurm_asset")[0].metadata
    assert md["extras_seen"].value == "hi"
    assert md["slurm/state"].value == "COMPLETED"
    assert md["slurm/job_id"].value == "101"
    assert md["slurm/max_rss_mb"].value == 10.0
    job = (fake_slurm / "job.101.sh").read_text()
    assert (
        "#SBATCH --job-name=dhpc-fake_slurm_asset\n#SBATCH --output=slurm.log\n#SBATCH --no-requeue\n#SBATCH --mem=256M\n#SBATCH --time=5\n"
        in job
    )
    run_dir = Path(md["slurm/run_dir"].value)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    # the launch handle was recorded in the run (reattach) before waiting
    engine = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    assert any(
        "dagster_pipes/launch_handle" in e.dagster_event.engine_event_data.metadata for e in engine
    )


def test_preflight_and_submit_round_trips(fake_slurm: Path, tmp_path: Path) -> None:
    """<= 3 round trips before the job is queued: preflight (cached per process) + stage&submit."""
    transport = LocalTransport()
    backend = SlurmBackend(
        transport,
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        python=sys.executable,
        record_launch=False,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\nsleep 0.2\nexit 0\n")
    answer = backend._preflight()
    assert answer["python"] == "ok" and answer["partitions"] == "debug,"
    run_dir = backend.run_dir_for("run1", "step")
    handle = backend.submit(str(staging), run_dir)
    assert transport.roundtrips == 2
    assert handle.job_id == "101" and handle.cluster == "fake"
    second = SlurmBackend(
        transport, cluster="fake", remote_base_dir=str(tmp_path / "remote"), python=sys.executable
    )
    second._preflight()
    assert transport.roundtrips == 2  # cached for this process
    # partitions, default partition, limits and GPUs (gres): one round trip
    assert len(calls(fake_slurm, "sinfo")) == 4


def test_failing_payload_raises_slurm_job_error_with_state(
    fake_slurm: Path, tmp_path: Path
) -> None:
    with pytest.raises(SlurmJobError) as err:
        dg.materialize([_asset(PAYLOADS / "fail.py")], resources={"compute": _resource(tmp_path)})
    cause = err.value
    assert (cause.state, cause.job_id, cause.exit_code) == ("FAILED", "101", 3)
    assert "Slurm job 101 on localhost ended FAILED with exit code" in str(cause)
    assert cause.metadata["slurm/state"] == "FAILED"


def test_unknown_partition_fails_before_anything_is_staged(
    fake_slurm: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        Exception, match="unknown partition 'gpu' on localhost: this cluster has debug"
    ):
        dg.materialize(
            [_asset(PAYLOADS / "report.py", queue={"partition": "gpu"})],
            resources={"compute": _resource(tmp_path)},
        )
    assert calls(fake_slurm, "sbatch") == []
    assert not list((tmp_path / "remote").glob("*/*"))


def test_missing_activation_script_fails_before_submit(fake_slurm: Path, tmp_path: Path) -> None:
    res = _resource(tmp_path, activate="/nonexistent/activate")
    with pytest.raises(ConfigError, match="activation script /nonexistent/activate does not exist"):
        dg.materialize([_asset(PAYLOADS / "report.py")], resources={"compute": res})
    assert calls(fake_slurm, "sbatch") == []


def test_cancel_is_confirmed(fake_slurm: Path, tmp_path: Path) -> None:
    backend = SlurmBackend(
        LocalTransport(),
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        record_launch=False,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\nsleep 30\n")
    handle = backend.submit(str(staging), backend.run_dir_for("r", "s"))
    backend.cancel(handle)
    assert (fake_slurm / f"state.{handle.job_id}").read_text().strip() == "CANCELLED"
    assert calls(fake_slurm, "scancel") == [f"scancel {handle.job_id}"]


def test_cancel_that_slurm_never_confirms_raises(
    fake_slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slurm_mod, "CANCEL_CONFIRM_TIMEOUT_S", 1.0)
    monkeypatch.setenv("FAKE_SLURM_STUCK", "1")
    backend = SlurmBackend(
        LocalTransport(),
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        record_launch=False,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\nsleep 5\n")
    handle = backend.submit(str(staging), backend.run_dir_for("r", "s"))
    with pytest.raises(
        CancelNotConfirmedError,
        match=f"scancel {handle.job_id} was sent but the job is still RUNNING",
    ) as info:
        backend.cancel(handle)
    assert (info.value.job_id, info.value.state) == (handle.job_id, "RUNNING")


def test_outcome_of_a_job_killed_without_exit_file(fake_slurm: Path, tmp_path: Path) -> None:
    backend = SlurmBackend(
        LocalTransport(),
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        record_launch=False,
    )
    (fake_slurm / "state.7").write_text("TIMEOUT\n")
    (fake_slurm / "rc.7").write_text("0\n")
    outcome = backend.outcome(JobHandle("slurm", "7", "/r", "fake"), None)
    assert outcome.state is JobState.TIMEOUT and outcome.exit_code is None
    assert outcome.metadata["slurm/state"] == "TIMEOUT"
    err = backend.failure_error(JobHandle("slurm", "7", "/r", "fake"), outcome, ["last words"])
    assert "ended TIMEOUT" in str(err) and "last words" in str(err)


def test_poll_uses_the_shared_cache(fake_slurm: Path, tmp_path: Path) -> None:
    backend = SlurmBackend(
        LocalTransport(),
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        record_launch=False,
    )
    (fake_slurm / "state.9").write_text("RUNNING\n")
    handle = JobHandle("slurm", "9", "/r", "fake")
    states = {backend.poll(handle).state for _ in range(20)}
    assert states == {JobState.RUNNING}
    assert len(calls(fake_slurm, "squeue")) == 1


def test_dry_run_prints_the_script_golden(tmp_path: Path) -> None:
    res = ComputeResource(
        mode="slurm",
        slurm=SlurmResource(
            queue=QueueConfig(
                partition="debug", time_limit="01:00:00", mem="2G", signal_before_timeout="USR2@60"
            ),
            python="/opt/env/bin/python",
            activate="/opt/env/bin/activate",
        ),
    )
    text = res.render_job_script(
        PAYLOADS / "report.py", args=["--n", "3"], queue={"cpus_per_task": 4}
    )
    job, launch = text.removeprefix("# ===== job.sh =====\n").split("\n# ===== launch.sh =====\n")
    header = [line for line in job.splitlines() if line.startswith("#SBATCH")]
    # our parts are golden here; the wrapper body is the foundation's golden (test_jobscript)
    assert_golden("slurm_dry_run_header.txt", "\n".join(header) + "\n")
    assert_golden("slurm_dry_run_launch.sh", launch)
    assert job == render_job_script(DRY_RUN_DIR, header_lines=tuple(header))


def test_from_env_reads_site_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("not a real key")
    for k, v in {
        "DAGSTER_HPC_SLURM_PARTITION": "cpu",
        "DAGSTER_HPC_SLURM_ACCOUNT": "proj-1",
        "DAGSTER_HPC_SLURM_CPUS_PER_TASK": "4",
        "DAGSTER_HPC_SLURM_TIME_LIMIT": "2-00",
        "DAGSTER_HPC_SLURM_PYTHON": "/p/bin/python",
        "DAGSTER_HPC_SSH_HOST": "login.example.org",
        "DAGSTER_HPC_SSH_JUMP_HOSTS": "me@gw:2222",
        "DAGSTER_HPC_SSH_KEY_PATH": str(key),
    }.items():
        monkeypatch.setenv(k, v)
    res = SlurmResource.from_env()
    assert (
        res.queue.partition,
        res.queue.account,
        res.queue.cpus_per_task,
        res.queue.time_limit,
    ) == ("cpu", "proj-1", 4, "2-00")
    assert res.python == "/p/bin/python"
    assert (
        res.ssh is not None
        and res.ssh.host == "login.example.org"
        and res.ssh.jump_hosts == ["me@gw:2222"]
    )
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MEM", "lots")
    with pytest.raises(ConfigError, match='e.g. mem="4G"'):
        SlurmResource.from_env()
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MEM", "1G")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_NODES", "two")
    with pytest.raises(ConfigError, match="DAGSTER_HPC_SLURM_NODES='two' is not a whole number"):
        SlurmResource.from_env()


def test_relative_remote_base_is_rejected() -> None:
    with pytest.raises(
        ConfigError,
        match="remote_base_dir must be an absolute path on the cluster or start with ~/",
    ):
        SlurmResource(remote_base_dir="runs").make_backend()


def test_dagster_internals_are_where_the_adapter_expects_them() -> None:
    """Fails loudly when a Dagster upgrade moves the launch-handle API (see _dagster_adapter)."""
    from dagster._core.pipes import reattach

    for name in (
        "PipesLaunchHandle",
        "record_external_launch",
        "find_latest_launch_handle",
        "find_latest_launch_handle_for_run",
        "record_external_reattach",
    ):
        assert hasattr(reattach, name), (
            f"dagster {dg.__version__} moved {name}: update _dagster_adapter"
        )
    assert _dagster_adapter.record_external_launch is reattach.record_external_launch

    seen: dict = {}

    @dg.asset
    def records(context: dg.AssetExecutionContext):
        handle = JobHandle("slurm", "42", "/runs/x", "u@h:22")
        _dagster_adapter.record_launch(context, handle)
        seen["found"] = _dagster_adapter.latest_launch(context)

    dg.materialize([records])
    assert seen["found"] == JobHandle("slurm", "42", "/runs/x", "u@h:22")


def test_good_preflight_is_shared_with_other_processes_bad_one_is_not(
    fake_slurm: Path, tmp_path: Path
) -> None:
    remote = str(tmp_path / "remote")
    first = LocalTransport()
    SlurmBackend(first, cluster="fake", remote_base_dir=remote, python=sys.executable)._preflight()
    assert first.roundtrips == 1
    slurm_mod._PREFLIGHT_CACHE.clear()  # as in a fresh step process of the multiprocess executor
    other = LocalTransport()
    answer = SlurmBackend(
        other, cluster="fake", remote_base_dir=remote, python=sys.executable
    )._preflight()
    assert other.roundtrips == 0 and answer["python"] == "ok"
    bad = LocalTransport()
    for _ in range(2):
        slurm_mod._PREFLIGHT_CACHE.clear()
        SlurmBackend(
            bad, cluster="fake", remote_base_dir=remote, python="/nonexistent/python"
        )._preflight()
    assert bad.roundtrips == 2  # a failing answer is asked again by every process


class DropsAfterRunning(LocalTransport):
    """Runs the command, then loses the connection before the answer arrives (once)."""

    def __init__(self, fail_on: str) -> None:
        super().__init__()
        self.fail_on = fail_on

    def run(self, command, *, timeout=None, stdin=None):
        result = super().run(command, timeout=timeout, stdin=stdin)
        if self.fail_on and self.fail_on in command:
            self.fail_on = ""
            raise TransportError("the connection dropped while running (simulated)")
        return result


def test_connection_lost_during_submit_finds_the_job_instead_of_abandoning_it(
    fake_slurm: Path, tmp_path: Path
) -> None:
    backend = SlurmBackend(
        DropsAfterRunning("sbatch"),
        cluster="fake",
        remote_base_dir=str(tmp_path / "remote"),
        record_launch=False,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\nsleep 0.2\n")
    handle = backend.submit(str(staging), backend.run_dir_for("r", "s"))
    assert (
        handle.job_id == "101" and len(calls(fake_slurm, "sbatch")) == 1
    )  # adopted, not resubmitted


def test_connection_lost_before_sbatch_says_nothing_was_submitted(
    fake_slurm: Path, tmp_path: Path
) -> None:
    class DropsBefore(LocalTransport):
        def run(self, command, *, timeout=None, stdin=None):
            if "sbatch" in command:
                raise TransportError("could not open a session (simulated)")
            return super().run(command, timeout=timeout, stdin=stdin)

    backend = SlurmBackend(
        DropsBefore(), cluster="fake", remote_base_dir=str(tmp_path / "remote"), record_launch=False
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\ntrue\n")
    with pytest.raises(TransportError, match="nothing was submitted. Retry the run"):
        backend.submit(str(staging), backend.run_dir_for("r", "s"))


def _staged(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "job.sh").write_text("#!/bin/bash\ntrue\n")
    return staging


def test_connection_lost_and_queue_unreachable_says_unknown_not_nothing_submitted(
    fake_slurm: Path, tmp_path: Path
) -> None:
    """If the check whether sbatch ran fails too, we must not claim 'nothing was submitted'."""

    class Down(LocalTransport):
        down = False

        def run(self, command, *, timeout=None, stdin=None):
            if self.down or "sbatch" in command:
                self.down = True  # the connection stays down after sbatch
                raise TransportError("connection lost (simulated)")
            return super().run(command, timeout=timeout, stdin=stdin)

    backend = SlurmBackend(
        Down(), cluster="fake", remote_base_dir=str(tmp_path / "remote"), record_launch=False
    )
    with pytest.raises(
        TransportError, match="(?s)UNKNOWN whether a job was submitted.*squeue --me"
    ) as info:
        backend.submit(str(_staged(tmp_path)), backend.run_dir_for("r", "s"))
    assert "Retry the run" not in str(info.value)


@pytest.mark.parametrize("error", [AuthenticationError, HostKeyError])
def test_refused_credentials_at_submit_surface_as_they_are(
    fake_slurm: Path, tmp_path: Path, error
) -> None:
    class Refused(LocalTransport):
        def run(self, command, *, timeout=None, stdin=None):
            if "sbatch" in command:
                raise error("refused (simulated): fix the key / known_hosts")
            return super().run(command, timeout=timeout, stdin=stdin)

    backend = SlurmBackend(
        Refused(), cluster="fake", remote_base_dir=str(tmp_path / "remote"), record_launch=False
    )
    with pytest.raises(error, match="refused"):
        backend.submit(str(_staged(tmp_path)), backend.run_dir_for("r", "s"))


class _ScriptedSacct(LocalTransport):
    """Answers each sacct with the next of ``answers`` (the last one repeats)."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers
        self.sacct_calls = 0

    def run(self, command: str, *, timeout: float | None = None, **kw):
        from dagster_hpc.transport.base import CommandResult

        # the first query is the final-record program (slurmctld unreachable here: it asks
        # sacct with AllocTRES, the rows below), later ones settle_command
        assert command.startswith(("r=$(sacct ", "sh -c ")), command
        self.sacct_calls += 1
        return CommandResult(0, self.answers[min(self.sacct_calls, len(self.answers)) - 1], "")


# What the test cluster's sacct printed for a sub-second job 30 ms after it ended: slurmdbd's
# stand-in row (named "allocation", no partition, already COMPLETED), then the job's own record
# (here with a MaxRSS sample, so the test can tell which record the numbers came from).
_STAND_IN = (
    "12|allocation|COMPLETED|0:0|0|1|1|00:00.095|0||billing=1,cpu=1,mem=256M,node=1|node1||None\n"
    "12.batch|batch|COMPLETED|0:0|0|1|1|00:00.095|0||cpu=1,mem=256M,node=1|node1||\n"
)
_FINAL = (
    "12|dhpc-x|COMPLETED|0:0|1|1|1|00:00.095|1|20M|billing=1,cpu=1,mem=256M,node=1|node1|debug|None\n"
    "12.batch|batch|COMPLETED|0:0|1|1|1|00:00.095|1|20M|cpu=1,mem=256M,node=1|node1||\n"
)


def test_outcome_waits_past_a_stand_in_record_without_slurmctlds_partition(tmp_path: Path) -> None:
    transport = _ScriptedSacct([_STAND_IN, _STAND_IN, _FINAL])
    backend = SlurmBackend(
        transport, cluster="fake", remote_base_dir=str(tmp_path / "r"), record_launch=False
    )
    outcome = backend.outcome(JobHandle("slurm", "12", "/r", "fake"), 0)
    assert transport.sacct_calls == 3
    assert outcome.state is JobState.COMPLETED
    assert outcome.metadata["slurm/partition"] == "debug"
    assert outcome.metadata["slurm/max_rss_mb"] == 20.0


def test_outcome_takes_a_complete_stand_in_with_slurmctlds_partition(tmp_path: Path) -> None:
    from dagster_hpc.backends.slurm import RUN_DIR_REMOVED_MARK
    from dagster_hpc.backends.slurm_sacct import PARTITION_MARK

    answer = _STAND_IN + f"{PARTITION_MARK}|12|debug\n{RUN_DIR_REMOVED_MARK}\n"
    transport = _ScriptedSacct([answer, _FINAL])
    backend = SlurmBackend(
        transport, cluster="fake", remote_base_dir=str(tmp_path / "r"), record_launch=False
    )
    handle = JobHandle("slurm", "12", str(tmp_path / "r" / "run-1"), "fake")
    backend.job_ended(handle, 0, remove_run_dir=True)
    outcome = backend.outcome(handle, 0)
    assert transport.sacct_calls == 1  # no wait for slurmdbd's own record
    assert outcome.state is JobState.COMPLETED
    assert outcome.metadata["slurm/partition"] == "debug"
    assert outcome.metadata["slurm/elapsed_s"] == 0 and "slurm/max_rss_mb" not in outcome.metadata
    assert backend.run_dir_removed(handle)
