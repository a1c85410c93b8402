"""Checkpoint and requeue without a cluster: the wrapper's attempt bookkeeping (run for real with
bash, a fake ``scontrol`` on PATH), the payload-side helper, the Dagster-side attempt records,
the reader across attempts and the QueueConfig checks (issue 15; the real round trips are in
tests/integration/test_slurm_requeue.py)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dagster_hpc import attempts as attempts_mod
from dagster_hpc.attempts import AttemptLog, attempt_metadata, parse_duplicates, summary
from dagster_hpc.errors import ConfigError
from dagster_hpc.jobscript import (
    EXIT_REQUEUE,
    EXIT_REQUEUE_FAILED,
    EXIT_REQUEUES_EXHAUSTED,
    RequeueSpec,
    render_env_file,
    render_job_script,
)
from dagster_hpc.pipes import RunDirMessageReader
from dagster_hpc.pipes import checkpoint as helper
from dagster_hpc.queue import DEFAULT_MAX_REQUEUES, DEFAULT_REQUEUE_SIGNAL, QueueConfig
from dagster_hpc.rundir import (
    ATTEMPTS,
    CHECKPOINT_HELPER,
    ENV_FILE,
    EXIT_CODE,
    JOB_SCRIPT,
    LAUNCH_SCRIPT,
    PIPES_MESSAGES,
    STDERR,
    STDOUT,
)
from dagster_hpc.transport.local import LocalTransport
from tests.unit.conftest import wait_until
from tests.unit.golden import assert_golden

# bash start-up on a loaded 2-core machine
RUN_TIMEOUT_S = 20
HELPER_SOURCE = Path(helper.__file__)


# -- the wrapper ---------------------------------------------------------------------------
def _run_dir(tmp_path: Path, launch: str, *, max_requeues: int | None) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = None if max_requeues is None else RequeueSpec(max_requeues=max_requeues, signal="USR2")
    (run_dir / JOB_SCRIPT).write_text(render_job_script(str(run_dir), requeue=spec))
    (run_dir / LAUNCH_SCRIPT).write_text(launch)
    (run_dir / ENV_FILE).write_text(render_env_file({}))
    return run_dir


def _fake_scontrol(tmp_path: Path, rc: int = 0) -> dict[str, str]:
    """A ``scontrol`` that records its arguments (the job is 'requeued' by running job.sh again)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "scontrol.log"
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {rc}\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}


def _attempt(run_dir: Path, env: dict[str, str]) -> int:
    proc = subprocess.run(["bash", str(run_dir / JOB_SCRIPT)], env=env, timeout=RUN_TIMEOUT_S)
    return proc.returncode


def _lines(run_dir: Path) -> list[list[str]]:
    return [line.split("\t") for line in (run_dir / ATTEMPTS).read_text().splitlines()]


# launch.sh: counts its runs, prints the attempt, asks for a requeue until attempt FINAL
_COUNTING = f"""echo "attempt=$DAGSTER_HPC_ATTEMPT dir=$DAGSTER_HPC_CHECKPOINT_DIR sig=$DAGSTER_HPC_CHECKPOINT_SIGNAL"
echo run >> ./runs
[ "$DAGSTER_HPC_ATTEMPT" -ge "${{FINAL:-99}}" ] && exit 0
exit {EXIT_REQUEUE}
"""


def test_wrapper_golden_with_requeue() -> None:
    header = ("#SBATCH --requeue", "#SBATCH --signal=B:USR2@60")
    text = render_job_script(
        "/scratch/runs/r1", header_lines=header, requeue=RequeueSpec(2, "USR2")
    )
    assert_golden("job_requeue.sh", text)


def test_requeued_attempts_are_counted_and_only_the_last_writes_exit_code(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, _COUNTING, max_requeues=2)
    env = {**_fake_scontrol(tmp_path), "FINAL": "3"}
    for _ in range(2):  # attempts 1, 2: checkpoint, ask, requeued (Slurm runs job.sh again)
        assert _attempt(run_dir, env) == 0
        assert not (run_dir / EXIT_CODE).exists()  # never an outcome for a requeued attempt
    assert _attempt(run_dir, env) == 0
    assert (run_dir / EXIT_CODE).read_text() == "0\n"
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\nrequeue 4242\n"
    stdout = (run_dir / STDOUT).read_text().splitlines()
    assert [s.split()[0] for s in stdout] == ["attempt=1", "attempt=2", "attempt=3"]
    assert stdout[0].split()[1:] == [f"dir={run_dir}/checkpoint", "sig=USR2"]
    assert (run_dir / "checkpoint").is_dir()
    assert oct((run_dir / "checkpoint").stat().st_mode & 0o777) == "0o700"
    lines = _lines(run_dir)
    assert [(k, n) for k, n, *_ in lines] == [
        ("start", "1"), ("end", "1"), ("start", "2"), ("end", "2"), ("start", "3"), ("end", "3")
    ]  # fmt: skip
    assert [line[4] for line in lines if line[0] == "end"] == ["requeued", "requeued", "completed"]
    # a fourth start (Slurm requeued a finished job, e.g. a late node failure): the outcome
    # stands and the payload does not run again
    assert _attempt(run_dir, env) == 0
    assert (run_dir / "runs").read_text().count("run") == 3
    assert len(_lines(run_dir)) == 6


def test_max_requeues_exceeded_is_final_and_says_so(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, _COUNTING, max_requeues=1)
    env = _fake_scontrol(tmp_path)
    assert _attempt(run_dir, env) == 0  # requeued
    assert _attempt(run_dir, env) == EXIT_REQUEUES_EXHAUSTED
    assert (run_dir / EXIT_CODE).read_text() == f"{EXIT_REQUEUES_EXHAUSTED}\n"
    assert "max_requeues=1 is used up (2 attempts)" in (run_dir / STDERR).read_text()
    assert _lines(run_dir)[-1][4] == "exhausted"
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # once, not twice


def test_an_attempt_beyond_the_budget_does_not_run_the_payload(tmp_path: Path) -> None:
    """Slurm itself requeues preempted jobs: attempt max_requeues + 2 is refused at its start."""
    run_dir = _run_dir(tmp_path, _COUNTING, max_requeues=0)
    (run_dir / ATTEMPTS).write_text("start\t1\t100\tnode1\nend\t1\t110\t143\tterminated\n")
    assert _attempt(run_dir, _fake_scontrol(tmp_path)) == EXIT_REQUEUES_EXHAUSTED
    assert not (run_dir / "runs").exists()
    assert (
        "Slurm started attempt 2, but max_requeues=0 allows 1 attempts"
        in (run_dir / STDERR).read_text()
    )


def test_a_failing_scontrol_requeue_is_a_final_clear_error(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, _COUNTING, max_requeues=3)
    assert _attempt(run_dir, _fake_scontrol(tmp_path, rc=1)) == EXIT_REQUEUE_FAILED
    assert (run_dir / EXIT_CODE).read_text() == f"{EXIT_REQUEUE_FAILED}\n"
    assert "scontrol requeue 4242 failed" in (run_dir / STDERR).read_text()


def test_sigterm_in_requeue_mode_leaves_the_outcome_to_slurm(tmp_path: Path) -> None:
    """Preemption, the time limit and scancel all send SIGTERM: the wrapper cannot tell them
    apart, so it writes no exit_code (the scheduler's state decides) and does not requeue."""
    launch = "trap 'echo saved; exit 98' TERM\necho ready\nwhile :; do sleep 0.05; done\n"
    run_dir = _run_dir(tmp_path, launch, max_requeues=2)
    env = _fake_scontrol(tmp_path)
    proc = subprocess.Popen(["bash", str(run_dir / JOB_SCRIPT)], env=env)
    wait_until(
        lambda: "ready" in ((run_dir / STDOUT).read_text() if (run_dir / STDOUT).exists() else ""),
        timeout_s=RUN_TIMEOUT_S,
        what="the payload to trap TERM",
    )
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=RUN_TIMEOUT_S) == EXIT_REQUEUE
    assert not (run_dir / EXIT_CODE).exists()
    assert _lines(run_dir)[-1][4] == "terminated"
    assert not (tmp_path / "scontrol.log").exists()


def test_without_requeue_every_end_is_final_and_a_rerun_keeps_it(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, "echo run >> ./runs\nexit 3\n", max_requeues=None)
    env = _fake_scontrol(tmp_path)
    assert _attempt(run_dir, env) == 3
    assert _attempt(run_dir, env) == 3  # Slurm ran it again (JobRequeue=1 on a node failure)
    assert (run_dir / "runs").read_text() == "run\n"
    assert _lines(run_dir) == [_lines(run_dir)[0], _lines(run_dir)[1]]
    assert _lines(run_dir)[1][3:] == ["3", "exited"]


# -- the payload-side helper ---------------------------------------------------------------
def test_helper_imports_only_the_standard_library() -> None:
    tree = ast.parse(HELPER_SOURCE.read_text())
    modules = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])
        if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    }
    assert modules <= set(sys.stdlib_module_names), modules


def test_helper_constants_match_the_library() -> None:
    assert helper.EXIT_REQUEUE == EXIT_REQUEUE
    assert helper.EXTRA_DIR == attempts_mod.CHECKPOINT_EXTRA
    assert attempts_mod.checkpoint_helper_source() == HELPER_SOURCE.resolve()
    assert CHECKPOINT_HELPER.removesuffix(".py") == "dagster_hpc_checkpoint"


def test_helper_saves_loads_and_requeues_on_the_signal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(helper.ENV_DIR, str(tmp_path / "ck"))
    monkeypatch.setenv(helper.ENV_ATTEMPT, "2")
    monkeypatch.setenv(helper.ENV_SIGNAL, "USR2")
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        ckpt = helper.Checkpoint.from_env()
        assert (ckpt.attempt, ckpt.resumed) == (2, False)
        assert ckpt.load(default={"n": 0}) == {"n": 0}
        ckpt.requeue_if_asked({"n": 1})  # no signal yet: nothing happens
        assert not ckpt.resumed
        os.kill(os.getpid(), signal.SIGUSR2)
        assert ckpt.stop_requested and ckpt.stop_signal == "SIGUSR2"
        with pytest.raises(SystemExit) as info:
            ckpt.requeue_if_asked({"n": 5})
        assert info.value.code == EXIT_REQUEUE
        assert json.loads((tmp_path / "ck" / helper.STATE_FILE).read_text()) == {"n": 5}
        assert helper.Checkpoint.from_env(watch=False).load() == {"n": 5}
        assert not list((tmp_path / "ck").glob("*.tmp"))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_helper_outside_a_requeue_run_uses_the_run_dir(tmp_path: Path, monkeypatch) -> None:
    for name in (helper.ENV_DIR, helper.ENV_ATTEMPT, helper.ENV_SIGNAL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HPC_RUN_DIR", str(tmp_path))
    ckpt = helper.Checkpoint.from_env(watch=False)
    assert (ckpt.directory, ckpt.attempt, ckpt.signal_name) == (tmp_path / "checkpoint", 1, None)


# -- Dagster side: attempt records, metadata, the reader -------------------------------------
_TSV = (
    "start\t1\t100\tnode1\n"
    "end\t1\t112\t98\trequeued\n"
    "start\t2\t130\tnode2\n"
    "end\t2\t135\t143\tterminated\n"
    "start\t3\t160\tnode1\n"
    "end\t3\t161\t0\tcompleted\n"
)


def _log(text: str) -> tuple[AttemptLog, list[str]]:
    log, said = AttemptLog(), []
    for line in text.splitlines():
        out = log.feed(line)
        if out:
            said.append(out)
    return log, said


def test_attempt_log_records_and_says_what_happened() -> None:
    log, said = _log(_TSV + "garbage\nend\tx\n")
    assert [(a.number, a.elapsed_s, a.how, a.node) for a in log.attempts] == [
        (1, 12, "requeued", "node1"),
        (2, 5, "terminated", "node2"),
        (3, 1, "completed", "node1"),
    ]
    assert said[0].startswith("attempt 1 ended after 12 s: requeued")
    assert said[1] == "attempt 2 started on node2 (the job was requeued)"
    assert "by SIGTERM" in said[2] and len(said) == 4


def test_attempt_metadata_names_every_attempt_slurm_fills_in_the_signalled_one() -> None:
    log, _ = _log(_TSV)
    sacct = parse_duplicates(
        "77|REQUEUED|12\n77|PREEMPTED|5\n77.batch|CANCELLED|5\n77|COMPLETED|1\n", "77"
    )
    assert sacct == [("REQUEUED", 12), ("PREEMPTED", 5), ("COMPLETED", 1)]
    md = attempt_metadata(log.attempts, sacct)
    assert md["slurm/attempts"] == 3
    assert md["slurm/attempt_states"] == "REQUEUED, PREEMPTED, COMPLETED"
    assert [r["elapsed_s"] for r in md["slurm/attempt_history"].data] == [12, 5, 1]
    assert summary(md) == "3 attempts: 1 REQUEUED 12 s, 2 PREEMPTED 5 s, 3 COMPLETED 1 s"
    # without sacct (accounting down): the wrapper's own word, never a guess
    assert attempt_metadata(log.attempts)["slurm/attempt_states"] == (
        "REQUEUED, TERMINATED, COMPLETED"
    )
    killed, _ = _log("start\t1\t100\tnode1\nstart\t2\t150\tnode1\n")
    md = attempt_metadata(killed.attempts, [("NODE_FAIL", 40), ("RUNNING", 3)])
    assert md["slurm/attempt_states"] == "NODE_FAIL, RUNNING"
    assert md["slurm/attempt_history"].data[0]["elapsed_s"] == 40


def test_reader_delivers_every_attempts_messages_once_and_one_closed_at_the_end(
    tmp_path: Path,
) -> None:
    """A requeued attempt closed its Pipes channel; the next opens it again. Dagster must see the
    messages of both, and "closed" only once, at the very end (not "message after closed")."""

    def msg(method: str, **params) -> str:
        return json.dumps({"method": method, "params": params}) + "\n"

    class Handler:
        def __init__(self) -> None:
            self.messages: list[dict] = []

        def handle_message(self, message: dict) -> None:
            self.messages.append(message)

    said: list[str] = []
    reader = RunDirMessageReader(
        LocalTransport(), str(tmp_path), lambda _s, _l: None, interval_s=0.001,
        on_attempt=said.append,
    )  # fmt: skip
    handler = Handler()

    def job() -> None:
        with open(tmp_path / ATTEMPTS, "a") as fh:
            fh.write("start\t1\t100\tn1\n")
        with open(tmp_path / PIPES_MESSAGES, "a") as fh:
            fh.write(msg("opened") + msg("log", message="a1") + msg("closed"))
        with open(tmp_path / ATTEMPTS, "a") as fh:
            fh.write("end\t1\t110\t98\trequeued\nstart\t2\t130\tn2\n")
        with open(tmp_path / PIPES_MESSAGES, "a") as fh:
            fh.write(msg("opened") + msg("log", message="a2") + msg("closed"))
        with open(tmp_path / ATTEMPTS, "a") as fh:
            fh.write("end\t2\t131\t0\tcompleted\n")
        (tmp_path / EXIT_CODE).write_text("0\n")

    with reader.read_messages(handler):  # type: ignore[arg-type]
        writer = threading.Thread(target=job)
        writer.start()
        assert reader.exited.wait(RUN_TIMEOUT_S)
        writer.join(RUN_TIMEOUT_S)
    methods = [m["method"] for m in handler.messages]
    assert methods == ["opened", "log", "opened", "log", "closed"], methods
    assert [m["params"]["message"] for m in handler.messages if m["method"] == "log"] == [
        "a1",
        "a2",
    ]
    assert [a.number for a in reader.attempts] == [1, 2]
    assert any("attempt 2 started on n2" in s for s in said), said


# -- QueueConfig --------------------------------------------------------------------------
def test_queue_requeue_lines_defaults_and_refusals() -> None:
    q = QueueConfig(requeue=True, time_limit="30")
    assert "#SBATCH --requeue" in q.to_sbatch_lines()
    assert f"#SBATCH --signal=B:{DEFAULT_REQUEUE_SIGNAL}" in q.to_sbatch_lines()
    assert (q.effective_max_requeues, q.checkpoint_signal) == (DEFAULT_MAX_REQUEUES, "USR2")
    q2 = QueueConfig(requeue=True, max_requeues=0, signal_before_timeout="USR1@30")
    assert (q2.effective_max_requeues, q2.checkpoint_signal) == (0, "USR1")
    assert "#SBATCH --no-requeue" in QueueConfig(requeue=False).to_sbatch_lines()
    assert not any("requeue" in line for line in QueueConfig().to_sbatch_lines())
    assert QueueConfig().effective_max_requeues is None
    with pytest.raises(ConfigError, match="max_requeues=2 with requeue=False"):
        QueueConfig(requeue=False, max_requeues=2)
    with pytest.raises(ConfigError, match="max_requeues=-1 must be >= 0"):
        QueueConfig(requeue=True, max_requeues=-1)
    with pytest.raises(ConfigError, match="set signal_before_timeout"):
        QueueConfig(requeue=True, time_limit="1")  # the default 60 s lead >= a 60 s limit
    with pytest.raises(ConfigError, match="did you mean 'max_requeues'"):
        QueueConfig(requeue=True, max_requeue=2)
    # an override may set max_requeues alone; the merged request must have requeue=True
    merged = QueueConfig(requeue=True).merged({"max_requeues": 1})
    assert merged.effective_max_requeues == 1
    with pytest.raises(ConfigError, match="requeue is not enabled"):
        QueueConfig().merged({"max_requeues": 1}).check_requeue_effective()
    with pytest.raises(ConfigError, match="not supported for arrays"):
        QueueConfig(requeue=True).refuse_requeue("arrays (run_array / run_partitions)")


def test_requeue_settings_from_the_environment(monkeypatch) -> None:
    from dagster_hpc.backends.slurm_resource import SlurmResource

    monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", "1")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MAX_REQUEUES", "4")
    queue = SlurmResource.from_env().queue
    assert (queue.requeue, queue.effective_max_requeues) == (True, 4)
    monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", "maybe")
    with pytest.raises(ConfigError, match="DAGSTER_HPC_SLURM_REQUEUE='maybe' is not a yes/no"):
        SlurmResource.from_env()
    # every spelling of yes and no, in any case; no: --no-requeue and no checkpoint signal
    monkeypatch.delenv("DAGSTER_HPC_SLURM_MAX_REQUEUES")
    for word, value in (("YES", True), ("true", True), ("0", False), ("No", False)):
        monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", word)
        assert SlurmResource.from_env().queue.requeue is value, word
    lines = SlurmResource.from_env().queue.to_sbatch_lines()
    assert "#SBATCH --no-requeue" in lines and not any("--signal" in line for line in lines)
    # a budget that is not a whole number, and one without requeue: refused, naming the variables
    monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", "1")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MAX_REQUEUES", "two")
    with pytest.raises(ConfigError, match="DAGSTER_HPC_SLURM_MAX_REQUEUES='two' is not a whole"):
        SlurmResource.from_env()
    monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", "0")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MAX_REQUEUES", "2")
    with pytest.raises(ConfigError, match="max_requeues=2 with requeue=False") as refused:
        SlurmResource.from_env()
    assert "DAGSTER_HPC_SLURM_REQUEUE, DAGSTER_HPC_SLURM_MAX_REQUEUES" in str(refused.value)
    # the pre-timeout lead from the environment too (and its older spelling)
    monkeypatch.setenv("DAGSTER_HPC_SLURM_REQUEUE", "1")
    monkeypatch.delenv("DAGSTER_HPC_SLURM_MAX_REQUEUES")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_SIGNAL", "USR1@120")
    assert SlurmResource.from_env().queue.checkpoint_signal == "USR1"
    monkeypatch.setenv("DAGSTER_HPC_SLURM_SIGNAL_BEFORE_TIMEOUT", "USR2@90")
    with pytest.raises(ConfigError, match="set the same setting"):
        SlurmResource.from_env()
    # a misspelled variable is refused, not ignored (the job would run without requeue)
    monkeypatch.delenv("DAGSTER_HPC_SLURM_SIGNAL")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_MAX_REQUEUE", "2")
    with pytest.raises(ConfigError, match="did you mean 'DAGSTER_HPC_SLURM_MAX_REQUEUES'"):
        SlurmResource.from_env()
