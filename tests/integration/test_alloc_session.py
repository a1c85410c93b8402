"""Session mode on the real cluster: one allocation for a run, its assets as steps inside it.

8 assets under the multiprocess executor -> 1 allocation, 8 steps (sacct); a SIGKILLed Dagster
-> the allocation ends by itself within its idle timeout; Dagster termination -> nothing of the
run left in squeue; an SSH cut while a step runs -> the step completes."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.allocation.session import session_job_name
from tests.integration import session_defs
from tests.integration.slurm_support import (
    CREATED_BASES,
    JOB_DEADLINE_S,
    cleanup_remote_bases,
    remote,
    slurm_env,
)

REPO = Path(__file__).resolve().parents[2]
IDLE_S = 8  # the kill test's idle timeout: short, so a dead Dagster's allocation ends quickly
# the other tests' idle timeout: longer than the gap between two step processes of a run on a
# loaded 2-core machine (an allocation that idles out mid-run is replaced, by design)
RUN_IDLE_S = 90
# slack on top of the idle timeout: the agent's tick, slurmctld ending the job, our squeue poll
END_SLACK_S = 15


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _env(cluster, monkeypatch=None, **extra: str) -> dict[str, str]:
    env = slurm_env(cluster)
    env.update({"DHPC_SESSION_IDLE": str(RUN_IDLE_S), **extra})
    if monkeypatch is not None:
        for k, v in env.items():
            if k.startswith(("DAGSTER_HPC_", "DHPC_")):
                monkeypatch.setenv(k, v)
    return env


def _session_jobs(cluster, run_id: str) -> list[tuple[str, str]]:
    """(job id, state) of the allocations of this run (sacct, by the run's job name)."""
    name = session_job_name("run", run_id)
    text = remote(
        cluster,
        f"sacct -X -n -P --starttime now-1hour --name={shlex.quote(name)} --format=JobID,State",
    )
    return [tuple(line.split("|", 1)) for line in text.splitlines() if "|" in line]  # type: ignore[misc]


def _live(cluster, job_id: str) -> str:
    return remote(
        cluster, f"squeue --noheader --jobs={job_id} --format=%T 2>/dev/null || true"
    ).strip()


def test_eight_assets_one_allocation_eight_steps(cluster, monkeypatch, tmp_path: Path) -> None:
    _env(cluster, monkeypatch)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(dg.reconstructable(session_defs.session_job), instance=instance)
        assert result.success
        pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
        assert len(pids) == 8  # really one process per step
        mds = [result.asset_materializations_for_node(f"session_{i}")[0].metadata for i in range(8)]
        run_id = result.run_id
    allocs = {md["slurm/allocation_id"].value for md in mds}
    assert len(allocs) == 1, allocs
    (alloc,) = allocs
    assert [md["slurm/state"].value for md in mds] == ["COMPLETED"] * 8
    step_ids = sorted(int(md["slurm/step_id"].value) for md in mds)
    assert len(set(step_ids)) == 8
    assert all(md["slurm/job_id"].value == f"{alloc}.{md['slurm/step_id'].value}" for md in mds)
    assert all("slurm/elapsed_s" in md for md in mds)  # per-step sacct record
    jobs = _session_jobs(cluster, run_id)
    assert [j for j, _ in jobs] == [alloc], jobs  # ONE allocation for the run
    steps = remote(cluster, f"sacct -n -P -j {alloc} --format=JobID,State").split()
    assert len([s for s in steps if re.match(rf"{alloc}\.\d+\|COMPLETED", s)]) == 8, steps
    # the last step stopped the allocation: it ends at the run's end, not after the idle timeout
    deadline = time.monotonic() + END_SLACK_S
    while _live(cluster, alloc) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live(cluster, alloc) == ""
    base = os.environ["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"].replace("~/", "$HOME/", 1)
    log = remote(cluster, f"cat {base}/{run_id}/session-run-*/agent.log")
    assert "ending the allocation: the run ended (stop file)" in log, log


def _start_driver(cluster, home: Path, env: dict | None = None, **extra: str) -> subprocess.Popen:
    env = env or _env(cluster, **extra)
    (home / "remote_base").write_text(env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.session_defs", str(home)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_step_running(cluster, home: Path, proc: subprocess.Popen) -> tuple[str, str]:
    """(run id, allocation id) once a step of the driver's run is running in its allocation."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        runs = (
            [d.name for d in (home / "storage").glob("*") if d.is_dir()]
            if (home / "storage").exists()
            else []
        )
        for run_id in runs:
            name = session_job_name("run", run_id)
            ids = remote(
                cluster, f"squeue --me --noheader --name={shlex.quote(name)} --format=%i"
            ).split()
            if not ids:
                continue  # (squeue ignores --name together with --steps: ask per job)
            out = remote(cluster, f"squeue --noheader --steps --jobs={ids[0]} --format=%i")
            if any(re.match(rf"{ids[0]}\.\d+$", s) for s in out.split()):
                return run_id, ids[0]
        time.sleep(0.5)
    raise AssertionError("no session step started")


def test_sigkilled_dagster_allocation_ends_within_idle_timeout(cluster, tmp_path: Path) -> None:
    proc = _start_driver(
        cluster, tmp_path, DHPC_SESSION_ASSETS="1", DHPC_EXECUTOR="in_process",
        DHPC_PAYLOAD=str(session_defs.PAYLOADS / "ticker.py"), DHPC_SESSION_IDLE=str(IDLE_S),
    )  # fmt: skip
    try:
        run_id, alloc = _wait_step_running(cluster, tmp_path, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # Dagster dies: nobody will stop the allocation
        proc.wait(timeout=30)
        killed_at = time.monotonic()
        # the step (4 s of ticks) finishes inside the allocation, then the idle timeout runs
        while _live(cluster, alloc) and time.monotonic() - killed_at < 4 + IDLE_S + END_SLACK_S:
            time.sleep(0.5)
        assert _live(cluster, alloc) == "", "the allocation outlived its idle timeout"
        log = remote(cluster, f"sacct -n -P -j {alloc} --format=JobID,State")
        assert f"{alloc}.0|COMPLETED" in log, log  # the step itself was not killed
        base = (tmp_path / "remote_base").read_text().replace("~/", "$HOME/", 1)
        agent_log = remote(cluster, f"cat {base}/{run_id}/session-run-*/agent.log")
        assert f"ending the allocation: idle for {IDLE_S}s" in agent_log, agent_log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_killed_dagster_session_step_is_reattached_not_run_again(cluster, tmp_path: Path) -> None:
    """Dagster SIGKILLed while a session step runs; the re-execution from failure (before the
    idle timeout) waits for that step in its allocation (or reads it, if it finished) from its
    run dir: one step in sacct, every line once, no allocation of the new run."""
    extra = dict(
        DHPC_SESSION_ASSETS="1", DHPC_EXECUTOR="in_process",
        DHPC_PAYLOAD=str(session_defs.PAYLOADS / "ticker.py"), DHPC_SESSION_IDLE="60",
    )  # fmt: skip
    env = _env(cluster, **extra)  # the same cluster name and remote base for both runs
    proc = _start_driver(cluster, tmp_path, env)
    alloc = ""
    try:
        run_id, alloc = _wait_step_running(cluster, tmp_path, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # Dagster dies; the step goes on in the allocation
        proc.wait(timeout=30)
        again = subprocess.run(
            [sys.executable, "-m", "tests.integration.session_defs", str(tmp_path)]
            + ["--reexecute", run_id],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        got = json.loads(again.stdout.strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if alloc:
            remote(cluster, f"scancel {alloc} || true")  # ours; it would idle out in 60 s
    lines = got["lines"]
    # still running, or (the re-execution's process start is slower than the 4 s step) done
    why = ("it is RUNNING", "it already finished with exit code 0")
    assert any(
        f"reattaching to session step in allocation {alloc}" in m and m.endswith(why) for m in lines
    ), lines
    ticks = [m.split(" at ")[0] for m in lines if m.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(8)], lines  # from offset 0, none twice
    md = got["metadata"]
    assert md["slurm/allocation_id"] == alloc and md["slurm/state"] == "COMPLETED", md
    steps = remote(cluster, f"sacct -n -P -j {alloc} --format=JobID")
    assert [s for s in steps.split() if re.match(rf"{alloc}\.\d+$", s)] == [f"{alloc}.0"], steps
    assert _session_jobs(cluster, got["run_id"]) == []  # the re-execution submitted nothing


def test_dagster_termination_leaves_nothing_in_squeue(cluster, tmp_path: Path) -> None:
    proc = _start_driver(
        cluster, tmp_path, DHPC_SESSION_ASSETS="2",
        DHPC_PAYLOAD=str(session_defs.PAYLOADS / "sleeper.py"), DHPC_SESSION_IDLE="300",
    )  # fmt: skip
    try:
        run_id, alloc = _wait_step_running(cluster, tmp_path, proc)
        proc.send_signal(signal.SIGINT)  # what Dagster sends the run worker of a terminated run
        out, _ = proc.communicate(timeout=120)
        Path("/tmp/alloc-term-driver.log").write_bytes(out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    name = session_job_name("run", run_id)
    left = remote(cluster, f"squeue --me --noheader --name={shlex.quote(name)}").strip()
    assert left == "", (left, out.decode()[-3000:])
    deadline = time.monotonic() + 15  # slurmdbd records the final state a moment later
    while True:
        state = remote(cluster, f"sacct -X -n -P -j {alloc} --format=State").strip()
        if state.startswith("CANCELLED") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state.startswith("CANCELLED"), (state, out.decode()[-2000:])
    assert f"cancelling slurm-session job {alloc}" in out.decode()


def test_ssh_cut_during_a_step_the_step_completes(
    cluster, dedicated_key, monkeypatch, tmp_path: Path
) -> None:
    _env(
        cluster, monkeypatch, DHPC_SESSION_ASSETS="1", DHPC_EXECUTOR="in_process",
        DHPC_PAYLOAD=str(session_defs.PAYLOADS / "ticker.py"),
    )  # fmt: skip
    monkeypatch.setenv("DAGSTER_HPC_SSH_KEY_PATH", str(dedicated_key.path))
    kills: list[float] = []  # when our connection was cut (time.time())
    stop = threading.Event()

    def cut() -> None:
        """Once the step runs inside the allocation, kill our SSH connection (its sshd process)
        twice, a second apart (commands in flight before the step started would fail, by design:
        they are never re-run blindly)."""
        while not stop.wait(0.2):
            steps = remote(cluster, "squeue --me --noheader --steps --format=%j")
            if any(name.startswith("session_0-") for name in steps.split()):
                break
        for _ in range(2):
            if stop.wait(1.0):
                return
            # our connections: the source ports sshd logged for the test's own key
            for port in dedicated_key.ports(cluster.sshd_log("main")):
                ss = subprocess.run(
                    ["ss", "-Htnp", "state", "established", f"( sport = :{cluster.port} and dport = :{port} )"],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                for pid in sorted({int(p) for p in re.findall(r"pid=(\d+)", ss)}):
                    os.kill(pid, signal.SIGTERM)
                    kills.append(time.time())

    cutter = threading.Thread(target=cut, daemon=True)
    cutter.start()
    # in-process (not reconstructable: this pytest process already reconstructed session_job
    # with 8 assets in another test, and Dagster caches reconstructed jobs per process)
    from dagster_hpc.allocation.session import SessionConfig
    from dagster_hpc.backends.slurm_resource import SlurmResource
    from dagster_hpc.compute import ComputeResource

    @dg.asset(name="session_0")
    def ticking(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, session_defs.PAYLOADS / "ticker.py").get_results()

    resource = ComputeResource(
        mode="slurm",
        session=SessionConfig(queue={"ntasks": 1, "time_limit": "10"}, idle_timeout_s=RUN_IDLE_S),
        slurm=SlurmResource.from_env(),
    )
    try:
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            result = dg.materialize([ticking], resources={"compute": resource}, instance=instance)
            assert result.success
            md = result.asset_materializations_for_node("session_0")[0].metadata
            lines = [
                line
                for e in instance.all_logs(result.run_id)
                if e.user_message
                for line in e.user_message.split("\n")
                if line.startswith("tick ")
            ]
    finally:
        stop.set()
        cutter.join(timeout=30)
    assert md["slurm/state"].value == "COMPLETED"
    ticks = [float(line.split(" at ")[1]) for line in lines]
    assert any(ticks[0] <= k <= ticks[-1] for k in kills), (kills, ticks)  # cut while it ran
    assert dedicated_key.accepted(cluster.sshd_log("main")) >= 2  # it really reconnected
    assert [line.split(" at ")[0] for line in lines] == [f"tick {i}" for i in range(8)]
