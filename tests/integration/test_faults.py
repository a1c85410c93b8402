"""What clusters do to running jobs, on a private cluster instance (fault_cluster.py), one test per
fault, each asserting its figure: messages lost 0, doubled 0, healthy jobs wrongly cancelled 0,
double submits 0. docs/faults.md has the table of what the user sees and what is guaranteed."""

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from dagster_hpc.queue import QueueConfig
from dagster_hpc.rundir import PIPES_MESSAGES
from tests.integration.fault_cluster import FaultCluster
from tests.integration.slurm_support import (
    CREATED_BASES,
    JOB_DEADLINE_S,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    slurm_env,
    staged_run_dirs,
)

REPO = Path(__file__).resolve().parents[2]

# The payload's ticks (fault_ticker.py) and how long a fault lasts before it is undone.
TICKS = 20
OUTAGE_S = 3.0
FLOOD_BYTES = 1 << 30  # fault_flood.py's default
FLOOD_LINE_BYTES = 64  # fault_flood.py: "flood %057d\n", numbered 0..16383 in every MiB
FLOOD_LINES_PER_BLOCK = (1 << 20) // FLOOD_LINE_BYTES
FLOOD_CAP = 1 << 20  # the flood test's forward_cap_bytes (the default is 8 MiB)
# A job of the idle private cluster starts within seconds; generous for a loaded machine.
RUNNING_WITHIN_S = 120
POLL_S = 0.2


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(fault_cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(fault_cluster.cluster, since)


class Run:
    """One materialization of one Slurm asset on the fault cluster, with a disruption."""

    def __init__(self, fc: FaultCluster, tmp_path: Path, payload: str, **resource_kw):
        self.fc = fc
        self.name = f"fault_{uuid.uuid4().hex[:8]}"
        self.slurm_name = job_name(self.name)
        self.payload = PAYLOADS / payload
        self.resource = compute(fc.cluster, **resource_kw)
        self.tmp_path = tmp_path
        self.job: tuple[str, str, str] | None = None  # (id, node, run dir) once RUNNING
        self.disruption_error: BaseException | None = None

    def running_job(self) -> tuple[str, str, str]:
        deadline = time.monotonic() + RUNNING_WITHIN_S
        while time.monotonic() < deadline:
            out = self.fc.slurm("squeue", "-h", "-n", self.slurm_name, "-o", "%i|%T|%N|%Z")
            for line in out.splitlines():
                job_id, state, node, workdir = line.split("|")
                if state == "RUNNING":
                    return job_id, node, workdir
            time.sleep(POLL_S)
        raise AssertionError(f"job {self.slurm_name} was not RUNNING within {RUNNING_WITHIN_S} s")

    def wait_state_not(self, state: str) -> str:
        assert self.job is not None
        deadline = time.monotonic() + RUNNING_WITHIN_S
        while time.monotonic() < deadline:
            now = self.fc.slurm("squeue", "-h", "-t", "all", "-j", self.job[0], "-o", "%T").strip()
            if now != state:
                return now
            time.sleep(POLL_S)
        raise AssertionError(f"job {self.job[0]} stayed {state}")

    def wait_first_half(self) -> None:
        """Until the payload wrote its first half (then it waits for the release file): a
        fault must hit a job that has really run, not one whose interpreter still starts."""
        assert self.job is not None
        messages = Path(self.job[2], PIPES_MESSAGES)
        last = f"tick {TICKS // 2 - 1}"
        deadline = time.monotonic() + RUNNING_WITHIN_S
        while time.monotonic() < deadline:
            if messages.exists() and last in messages.read_text(errors="replace"):
                return
            time.sleep(POLL_S)
        raise AssertionError(f"the payload never wrote {last!r} to {messages}")

    def release(self) -> None:
        assert self.job is not None
        Path(self.job[2], "release").touch()

    def materialize(
        self, during: "Callable[[Run], None] | None" = None, *, watch: bool = True
    ) -> dg.ExecuteInProcessResult:
        """``watch``: wait for the job to run, call ``during``, then release the payload."""
        payload = self.payload

        @dg.asset(name=self.name)
        def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
            yield from compute.run(context, payload).get_results()

        def disrupt() -> None:
            try:
                self.job = self.running_job()
                if during is not None:
                    self.wait_first_half()
                    during(self)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                self.disruption_error = exc
            finally:
                if self.job is not None:
                    self.release()

        thread = threading.Thread(target=disrupt, daemon=True)
        if watch:
            thread.start()
        with dg.instance_for_test(temp_dir=str(self.tmp_path)) as instance:
            result = dg.materialize(
                [_asset], resources={"compute": self.resource}, instance=instance,
                raise_on_error=False,
            )  # fmt: skip
            logs = instance.all_logs(result.run_id)
            self.messages = [
                line for e in logs if e.user_message for line in e.user_message.split("\n")
            ]
            self.observations = [
                e.dagster_event.event_specific_data.asset_observation.metadata
                for e in logs
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
            ]
        if watch:
            thread.join(timeout=RUNNING_WITHIN_S)
        if self.disruption_error is not None:
            raise self.disruption_error
        return result

    def counts(self) -> Counter:
        """How often each tick message and stdout line arrived."""
        return Counter(m for m in self.messages if m.startswith(("tick ", "line ")))

    def job_ids(self) -> list[str]:
        """Every job of this asset the scheduler knows (finished ones stay MinJobAge = 300 s)."""
        out = self.fc.slurm("squeue", "-h", "-t", "all", "-n", self.slurm_name, "-o", "%i")
        return sorted(set(out.split()))

    def restarts(self, job_id: str) -> int:
        out = self.fc.slurm("scontrol", "show", "job", job_id)
        return int(out.split("Restarts=", 1)[1].split()[0])


def _resume(fc: FaultCluster, run: Run) -> None:
    """ReturnToService=2 brings a DOWN node back by itself once its slurmd answers; make sure."""
    if run.job is None:
        return
    fc.slurm("scontrol", "update", f"nodename={run.job[1]}", "state=resume", check=False)
    deadline = time.monotonic() + RUNNING_WITHIN_S
    while not fc.nodes_idle() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def assert_every_message_once(run: Run) -> None:
    expected = Counter(
        {f"tick {i}": 1 for i in range(TICKS)} | {f"line {i}": 1 for i in range(TICKS)}
    )
    got = run.counts()
    lost = sorted(set(expected) - set(got))
    doubled = sorted(k for k, n in got.items() if n > 1)
    assert (lost, doubled) == ([], []), f"lost {lost}, doubled {doubled}"


def step_error(result: dg.ExecuteInProcessResult, name: str):
    """The library's own error (the innermost cause) of the failed step."""
    failure = result.failure_data_for_node(name)
    assert failure is not None, "the step did not fail"
    error = failure.error
    while error.cause is not None:
        error = error.cause
    return error


def test_slurmctld_restarted_mid_job_completes_every_message_once(fault_cluster, tmp_path):
    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_ticker.py")
    restarted: list[int] = []

    def restart_controller(run: Run) -> None:
        restarted.append(fc.stop_daemon("run/slurmctld.pid", "slurmctld"))
        time.sleep(OUTAGE_S)  # the step's squeue fails meanwhile
        fc.up()

    result = run.materialize(restart_controller)
    assert restarted and fc.pid("run/slurmctld.pid", "slurmctld") not in (None, restarted[0])
    assert result.success, step_error(result, run.name).message
    assert_every_message_once(run)
    md = result.asset_materializations_for_node(run.name)[0].metadata
    assert md["slurm/state"].value == "COMPLETED" and md["ticks"].value == TICKS
    assert run.job_ids() == [run.job[0]]  # double submits 0
    assert run.restarts(run.job[0]) == 0


def test_node_down_mid_job_fails_node_fail_with_metrics(fault_cluster, tmp_path):
    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_ticker.py")

    def down_the_node(run: Run) -> None:
        fc.slurm("scontrol", "update", f"nodename={run.job[1]}", "state=down", "reason=fault-test")
        run.wait_state_not("RUNNING")  # the kill reaches the job before it is released

    try:
        result = run.materialize(down_the_node)
    finally:
        _resume(fc, run)
    assert not result.success
    error = step_error(result, run.name)
    assert error.cls_name == "SlurmJobError", error.message
    assert f"Slurm job {run.job[0]}" in error.message and "NODE_FAIL" in error.message
    assert "metrics: elapsed " in error.message and run.job[1] in error.message
    # what the payload wrote before its node went down arrived, each line once (lost 0)
    before = Counter({f"tick {i}": 1 for i in range(TICKS // 2)})
    assert Counter(m for m in run.messages if m.startswith("tick ")) == before
    observed = run.observations
    assert observed and observed[0]["slurm/state"].value == "NODE_FAIL"
    assert observed[0]["slurm/metrics_available"].value is True  # the metrics of the failed job
    # not requeued behind our back (the messages would arrive twice): one job, never restarted
    assert run.job_ids() == [run.job[0]] and run.restarts(run.job[0]) == 0
    doubled = [k for k, n in run.counts().items() if n > 1]
    assert doubled == []


def test_node_down_mid_job_with_requeue_continues_in_a_second_attempt(fault_cluster, tmp_path):
    """requeue=True (issue 15 part 1): Slurm requeues the job whose node went DOWN; the wrapper
    counts a second attempt, which runs to the end. One step, one job, 2 attempts; each
    attempt's messages arrive once (the first attempt's half, then all of the second's)."""
    fc = fault_cluster
    queue = QueueConfig(time_limit="5", mem="256M", requeue=True, max_requeues=1)
    run = Run(fc, tmp_path, "fault_ticker.py", queue=queue)

    def down_the_node(run: Run) -> None:
        fc.slurm("scontrol", "update", f"nodename={run.job[1]}", "state=down", "reason=fault-test")
        run.wait_state_not("RUNNING")

    try:
        result = run.materialize(down_the_node)
    finally:
        _resume(fc, run)
    assert result.success, step_error(result, run.name).message
    md = result.asset_materializations_for_node(run.name)[0].metadata
    assert md["slurm/attempts"].value == 2 and md["slurm/state"].value == "COMPLETED"
    assert md["slurm/attempt_states"].value.split(", ")[-1] == "COMPLETED"
    first = Counter(m for m in run.messages if m.startswith("tick ") and "(attempt" not in m)
    second = Counter(m for m in run.messages if m.endswith("(attempt 2)") and m.startswith("tick"))
    assert first == Counter(f"tick {i}" for i in range(TICKS // 2))  # lost 0, doubled 0
    assert second == Counter(f"tick {i} (attempt 2)" for i in range(TICKS))
    assert run.job_ids() == [run.job[0]] and run.restarts(run.job[0]) == 1  # one job


def test_slurmdbd_down_the_job_succeeds_with_metrics_flagged_unavailable(fault_cluster, tmp_path):
    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_ticker.py")
    fc.stop_daemon("run/slurmdbd.pid", "slurmdbd")
    try:
        started = time.monotonic()
        result = run.materialize()
        wall = time.monotonic() - started
    finally:
        fc.up()
    back = time.monotonic()
    assert result.success, step_error(result, run.name).message
    assert_every_message_once(run)
    md = result.asset_materializations_for_node(run.name)[0].metadata
    assert md["slurm/state"].value == "COMPLETED"
    assert md["slurm/metrics_available"].value is False
    assert "slurmdbd" in md["slurm/metrics_unavailable_reason"].value
    assert run.job_ids() == [run.job[0]] and run.restarts(run.job[0]) == 0  # double submits 0
    # slurmctld kept the job's records and hands them over once slurmdbd is back: nothing is
    # lost from accounting either (what `dagster-hpc jobs` / sacct show later)
    handed = _sacct_state_within(fc, run.job[0], RUNNING_WITHIN_S)
    assert handed == "COMPLETED", f"sacct -j {run.job[0]} after slurmdbd restarted: {handed!r}"
    print(
        f"\nslurmdbd down: step wall {wall:.1f} s; records in slurmdbd "
        f"{time.monotonic() - back:.1f} s after it restarted"
    )


def _sacct_state_within(fc: FaultCluster, job_id: str, timeout_s: float) -> str:
    """The job's state in accounting, asked until it is final or ``timeout_s`` passed."""
    deadline, state = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        out = fc.slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State", check=False)
        state = out.strip().splitlines()[0] if out.strip() else ""
        if state and state not in ("PENDING", "RUNNING"):
            return state
        time.sleep(POLL_S * 5)
    return state


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _accepted(fc: FaultCluster) -> int:
    """Logins on the fault cluster's sshd (only this session's tests use it)."""
    log = fc.cluster.sshd_log("main").read_text(errors="replace")
    return log.count("Accepted publickey")


def test_sshd_restarted_mid_job_the_step_completes(fault_cluster, tmp_path):
    """The login sshd stops and its sessions are cut (every per-connection sshd killed), for
    OUTAGE_S; then it starts again. The step's reader and poller retry; the job runs on."""
    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_ticker.py")
    cut: list[int] = []
    logins_before = _accepted(fc)

    def restart_sshd(run: Run) -> None:
        listener = fc.pid("run/sshd-main.pid", "sshd")
        assert listener is not None
        sessions = _descendants(listener)
        fc.stop_daemon("run/sshd-main.pid", "sshd")
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cut.extend(sessions)
        time.sleep(OUTAGE_S)
        fc.up()

    result = run.materialize(restart_sshd)
    assert cut, "no session was cut"
    assert result.success, step_error(result, run.name).message
    assert_every_message_once(run)
    assert _accepted(fc) > logins_before  # the connection was made again after the restart
    assert run.job_ids() == [run.job[0]] and run.restarts(run.job[0]) == 0


@pytest.fixture
def small_fs(fault_cluster, tmp_path):
    """A 256 KiB tmpfs, owned by the cluster user, as the remote run root."""
    mount = fault_cluster.confdir / f"small-{uuid.uuid4().hex[:8]}"
    mount.mkdir(mode=0o755)
    user = fault_cluster.cluster.user
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=256k,mode=0700,uid={user},gid={user}", "tmpfs",
         str(mount)],
        check=True,
    )  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def _fill(fc: FaultCluster, path: Path) -> None:
    user = shlex.quote(fc.cluster.user)
    subprocess.run(
        f"runuser -u {user} -- dd if=/dev/zero of={shlex.quote(str(path / 'filler'))} bs=4k "
        "status=none || true",
        shell=True,
        check=True,
    )


def test_full_run_root_at_staging_is_a_clear_error_and_nothing_is_submitted(
    fault_cluster, small_fs, tmp_path
):
    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_ticker.py", remote_base_dir=str(small_fs / "runs"))
    (small_fs / "runs").mkdir()
    subprocess.run(["chown", fc.cluster.user, str(small_fs / "runs")], check=True)
    _fill(fc, small_fs)
    result = run.materialize(watch=False)
    error = step_error(result, run.name)
    assert error.cls_name == "FilesystemFullError", error.message
    assert str(small_fs / "runs") in error.message and "Nothing was submitted" in error.message
    assert run.job_ids() == []  # double submits 0 (none at all)


def test_run_root_filling_during_the_job_is_never_a_success(fault_cluster, small_fs, tmp_path):
    fc = fault_cluster
    (small_fs / "runs").mkdir()
    subprocess.run(["chown", fc.cluster.user, str(small_fs / "runs")], check=True)
    run = Run(fc, tmp_path, "fault_fill.py", remote_base_dir=str(small_fs / "runs"))
    result = run.materialize(watch=False)
    assert not result.success
    assert result.asset_materializations_for_node(run.name) == []  # no half-written success
    error = step_error(result, run.name)
    assert error.cls_name == "FilesystemFullError", error.message
    assert str(small_fs / "runs") in error.message and "full filesystem" in error.message
    assert len(run.job_ids()) == 1


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_stdout_flood_is_capped_the_rest_left_on_the_cluster(fault_cluster, tmp_path):
    """A 1 GiB flood with ComputeResource(forward_cap_bytes=FLOOD_CAP): the setting, not the
    8 MiB default, decides (and fewer forwarded lines keep the test short)."""
    from dagster_hpc.pipes.reader import CAPPED_METADATA_KEY, FORWARD_CAP_BYTES

    fc = fault_cluster
    run = Run(fc, tmp_path, "fault_flood.py", keep_run_dirs="failed", forward_cap_bytes=FLOOD_CAP)
    started = time.monotonic()
    result = run.materialize(watch=False)
    wall = time.monotonic() - started
    assert result.success, step_error(result, run.name).message
    md = result.asset_materializations_for_node(run.name)[0].metadata
    assert md["flood_bytes"].value == FLOOD_BYTES  # the Pipes message after the flood arrived
    note = md[CAPPED_METADATA_KEY.format(stream="stdout")].value
    stdout_log = note.split(" from byte ", 1)[0]
    assert "left in place" in note and stdout_log.endswith("/stdout.log")
    assert any("passed the forwarding cap" in m and stdout_log in m for m in run.messages)
    assert f"forwarding cap of {FLOOD_CAP} bytes" in " ".join(run.messages)
    flood = [m for m in run.messages if m.startswith("flood ")]
    forwarded = sum(len(m) + 1 for m in flood)
    assert FLOOD_CAP - 64 <= forwarded <= FLOOD_CAP + 1 < FORWARD_CAP_BYTES  # the cut line: no \n
    # the first lines of the file, in order, each once (the payload numbers them per MiB block)
    whole = [int(m.split()[1]) for m in flood if len(m) == FLOOD_LINE_BYTES - 1]
    assert whole == [i % FLOOD_LINES_PER_BLOCK for i in range(len(whole))]  # lost 0, doubled 0
    assert len(run.job_ids()) == 1  # double submits 0
    # the Dagster side holds the cap (event log + compute logs), not the gigabyte
    assert _tree_bytes(tmp_path) < 8 * FORWARD_CAP_BYTES
    try:
        # the whole output stays on the cluster, in the run directory kept despite the success
        assert Path(stdout_log).stat().st_size == FLOOD_BYTES
    finally:
        Path(stdout_log).unlink(missing_ok=True)
    print(f"\n1 GiB stdout flood: step wall {wall:.1f} s, forwarded {forwarded} bytes")


def _driver(command: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fault_driver", command],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


def _wait_for_lines(path: Path, proc: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + RUNNING_WITHIN_S
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().split()
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(POLL_S)
    raise AssertionError(f"the shim never paused ({path})")


@pytest.mark.parametrize("tool", ["tar", "sbatch"], ids=["during-staging", "during-sbatch"])
def test_dagster_killed_during_submission_never_submits_twice(fault_cluster, tmp_path, tool):
    """SIGKILL the Dagster process while the login node stages (tar) or submits (sbatch). During
    staging, the connection's shell dies with it: a partly staged run dir is left, which is no
    job. During sbatch, the submission goes on (the connection holder outlives the process) and
    queues a job nobody watches. Re-executing the run resolves both by the working directory."""
    fc = fault_cluster
    name = f"fault_{uuid.uuid4().hex[:8]}"
    run = Run(fc, tmp_path, "fault_ticker.py")
    run.name, run.slurm_name = name, job_name(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **slurm_env(fc.cluster),
        "DAGSTER_HOME": str(home),
        "DHPC_FAULT_ASSET": name,
        "DHPC_FAULT_PAYLOAD": "fault_ticker.py",
    }
    pause, entered = fc.pause_file(tool), fc.entered_file(tool)
    entered.unlink(missing_ok=True)
    pause.touch()
    try:
        first = _driver("run", env)
        shim_pid, shell_pid = (int(p) for p in _wait_for_lines(entered, first)[:2])
        first.kill()  # SIGKILL: the Dagster process dies mid-submission
        first.wait(timeout=30)
        if tool == "tar":  # the staging shell on the login node dies with its connection
            for pid in (shell_pid, shim_pid):
                os.kill(pid, signal.SIGKILL)
            time.sleep(OUTAGE_S)
        second = _driver("reexecute", env)
        time.sleep(OUTAGE_S)  # sbatch: the re-execution may meet the submission still in flight
    finally:
        pause.unlink(missing_ok=True)
    releaser = threading.Thread(target=lambda: _release_when_running(run), daemon=True)
    releaser.start()
    out, _ = second.communicate(timeout=JOB_DEADLINE_S)
    releaser.join(timeout=RUNNING_WITHIN_S)
    summary = json.loads(out.strip().splitlines()[-1])
    run.messages = summary["messages"]
    assert summary["success"], out[-3000:]
    assert_every_message_once(run)
    assert run.job_ids() == [summary["metadata"]["slurm/job_id"]]  # double submits 0
    if tool == "tar":
        assert any("it never became a job" in m for m in run.messages), run.messages
    else:
        assert any("found by its working directory" in m for m in run.messages), run.messages
    assert staged_run_dirs(fc.cluster, env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"]) == []


def _release_when_running(run: Run) -> None:
    run.job = run.running_job()
    run.release()
