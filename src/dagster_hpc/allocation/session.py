"""Session mode: one Slurm allocation for a Dagster run; its assets run as steps inside it.

Configured, not coded: ``ComputeResource(mode="slurm", session=SessionConfig(...))`` and every
``compute.run`` of the run becomes a step of the run's allocation. How it works:

- The first step process of the run that needs the allocation submits a holder job running
  ``agent.sh`` (in the session directory); the others find it in a machine-wide record keyed
  by cluster, run id and group, under a file lock (Dagster's multiprocess executor runs every
  step in its own process): one allocation, never two.
- A step stages an ordinary run directory (job.sh, Pipes files) and drops a request file into
  the session's ``requests/``: the agent starts it with ``srun`` inside the allocation. Nothing
  of the step hangs on an SSH connection, so an SSH outage never kills it; the step's Pipes
  files are tailed as for any job, and its own sacct record (``<job>.<step>``) gives per-step
  metrics.
- The allocation ends when the last step of the run is done (a ``stop`` file), on Dagster
  termination (``scancel`` of the allocation), and by itself after ``idle_timeout_s`` without
  steps (Dagster died: no node-hours burnt). A failing step does not end it.
- Each step's launch (allocation id + step run dir) is recorded in the Dagster run. When Dagster
  died mid-step and the step runs again (a retry, a re-execution from failure), a step that is
  still queued or running in its allocation, or that finished with exit code 0, is waited for
  and read from its run dir (``find_reattach``): it does not run a second time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shlex
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_hpc.backends.base import JobHandle, JobOutcome, JobState, JobStatus, ReattachDecision
from dagster_hpc.backends.slurm import SlurmBackend, _safe
from dagster_hpc.backends.slurm_poller import default_cache_dir
from dagster_hpc.backends.slurm_script import job_name, no_requeue_lines
from dagster_hpc.errors import ConfigError, PayloadError, RemoteCommandError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.transport import _shell

AGENT_SCRIPT = "agent.sh"
HOLDER_SCRIPT = "session.sh"
AGENT_LOG = "agent.log"
STOP_FILE = "stop"
STEP_ID_FILE = "step_id"
STEPS_DIR = "steps"  # <session dir>/steps/<step>-<id>: one run dir per step
# The agent looks for new step requests this often: a step starts at most this late.
AGENT_TICK_S = 0.2
# Default: how long an allocation without steps lives (Dagster died, or a long gap between
# steps): long enough for the multiprocess executor to start the next wave of step processes.
DEFAULT_IDLE_TIMEOUT_S = 60
# exit code of the request command when the session has closed (requests/ renamed by the agent)
EXIT_SESSION_CLOSED = 75
SESSION_SUBMIT_TIMEOUT_S = 120.0
SESSION_QUERY_TIMEOUT_S = 60.0
# A record's allocation is trusted without asking Slurm for this long after it was submitted
# (squeue may not list a job in the first instant).
SESSION_FRESH_S = 10.0


class SessionConfig(dg.Config):
    """One allocation per Dagster run (or per named group of its steps)."""

    queue: dict[str, Any] = Field(
        default={},
        description="The allocation's resource request (QueueConfig fields: nodes, cpus_per_task, "
        "mem, time_limit, partition, ...), merged over the SlurmResource queue.",
    )
    idle_timeout_s: int = Field(
        default=DEFAULT_IDLE_TIMEOUT_S,
        description="The allocation ends by itself after this many seconds without a running or "
        "requested step (a crashed Dagster never burns node-hours).",
    )
    step_options: list[str] = Field(
        default=["--exact", "--ntasks=1", "--cpus-per-task=1", "--mem=256M"],
        description="srun options of each step inside the allocation (its share of the allocation).",
    )
    group: str = Field(
        default="run", description="Steps with the same group share one allocation per run."
    )


def check_session(config: SessionConfig) -> QueueConfig:
    if config.idle_timeout_s < 1:
        raise ConfigError(
            f"session idle_timeout_s must be >= 1 second, got {config.idle_timeout_s}"
        )
    if not config.group or not all(c.isalnum() or c in "_-" for c in config.group):
        raise ConfigError(f"session group {config.group!r}: use letters, digits, '_' and '-'")
    for opt in config.step_options:
        if not opt.startswith("-") or "\n" in opt:
            raise ConfigError(
                f"session step option {opt!r} must be an srun option (starting with -)"
            )
    return QueueConfig.from_mapping(config.queue)


def agent_text() -> str:
    return resources.files("dagster_hpc.allocation").joinpath(AGENT_SCRIPT).read_text()


def session_job_name(group: str, run_id: str) -> str:
    """The allocation's Slurm job name: group and run (squeue/sacct find a run's allocation)."""
    return job_name(f"session-{group}-{run_id[:8]}")


def render_holder_script(*, queue: QueueConfig, name: str, config: SessionConfig) -> str:
    """The allocation's batch script: runs the agent in the session directory."""
    args = " ".join(
        shlex.quote(a)
        for a in [str(config.idle_timeout_s), str(AGENT_TICK_S), *config.step_options]
    )
    sbatch = queue.to_sbatch_lines()
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={shlex.quote(name)}",
        f"#SBATCH --output={AGENT_LOG}",
        *no_requeue_lines(sbatch),  # a requeued allocation would start a second agent here
        *sbatch,
        "# dagster-hpc session: the agent starts each requested step with srun inside this allocation",
        f"exec bash ./{AGENT_SCRIPT} {args}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Allocation:
    job_id: str
    dir: str  # the session directory on the cluster


def _record_path(cluster: str, run_id: str, group: str) -> Path:
    digest = hashlib.sha256("\0".join((cluster, run_id, group)).encode()).hexdigest()[:16]
    return default_cache_dir() / f"session-{digest}.json"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class SessionBackend(SlurmBackend):
    """A SlurmBackend whose jobs are steps of the run's shared allocation."""

    name = "slurm-session"

    def __init__(self, transport: Any, *, session: SessionConfig, **kw: Any):
        super().__init__(transport, **kw)
        self.session = session
        self.session_queue = check_session(session)
        self._alloc: Allocation | None = None
        self._run_id = ""
        self._step = ""
        self._context: Any = None
        self._step_ids: dict[str, str] = {}

    # --- the allocation ------------------------------------------------------------------
    def _acquire(self, run_id: str, *, force_new: bool = False) -> Allocation:
        path = _record_path(self.cluster, run_id, self.session.group)
        with _locked(path):
            rec = _read(path)
            if rec and not force_new and self._alive(rec):
                return Allocation(rec["job_id"], rec["dir"])
            alloc = self._submit_holder(run_id)
            _write(
                path,
                {
                    "job_id": alloc.job_id,
                    "dir": alloc.dir,
                    "at": time.time(),
                    "done": [],
                    "stopped": False,
                },
            )
            return alloc

    def _alive(self, rec: dict[str, Any]) -> bool:
        if rec.get("stopped"):
            return False
        if time.time() - float(rec.get("at", 0)) < SESSION_FRESH_S:
            return True
        status = self._poller.status(rec["job_id"], submitted_at=float(rec.get("at", 0)))
        return not status.state.finished

    def _submit_holder(self, run_id: str) -> Allocation:
        if self._base_abs is None:
            self._preflight()
        sdir = (
            f"{self._base_abs}/{_safe(run_id)}/session-{self.session.group}-{uuid.uuid4().hex[:8]}"
        )
        queue = self.queue.merged(self.session_queue)
        import tempfile

        staging = Path(tempfile.mkdtemp(prefix="dagster-hpc-session-"))
        try:
            (staging / AGENT_SCRIPT).write_text(agent_text())
            (staging / HOLDER_SCRIPT).write_text(
                render_holder_script(
                    queue=queue,
                    name=session_job_name(self.session.group, run_id),
                    config=self.session,
                )
            )
            (staging / "requests").mkdir()
            for f in (AGENT_SCRIPT, HOLDER_SCRIPT):
                (staging / f).chmod(0o700)
            data = _shell.tar_directory(staging)
        finally:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
        q = shlex.quote(sdir)
        cmd = f"{_shell.untar_command(sdir, 0o700)} && cd {q} && sbatch --parsable {HOLDER_SCRIPT}"
        res = self._transport.run(cmd, timeout=SESSION_SUBMIT_TIMEOUT_S, stdin=data)
        if not res.ok:
            raise RemoteCommandError(
                f"sbatch {HOLDER_SCRIPT} (session allocation in {sdir})",
                res.exit_code,
                res.stdout,
                res.stderr,
                hint="Slurm refused the session's allocation: check session.queue (partition, "
                "time_limit, nodes) against the site's limits",
            )
        job_id = res.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise PayloadError(f"sbatch answered {res.stdout!r}, not a job id (session dir {sdir})")
        log = getattr(getattr(self._context, "log", None), "info", None)
        if log:
            log(f"dagster-hpc: session allocation {job_id} submitted for run {run_id} (dir {sdir})")
        return Allocation(job_id, sdir)

    # --- Backend -------------------------------------------------------------------------
    def run_dir_for(self, run_id: str, step: str) -> str:
        self._run_id, self._step = run_id, step
        self._alloc = self._acquire(run_id)
        return f"{self._alloc.dir}/{STEPS_DIR}/{_safe(step)}-{uuid.uuid4().hex[:8]}"

    def submit(self, local_run_dir: str, remote_run_dir: str) -> JobHandle:
        assert self._alloc is not None
        data = _shell.tar_directory(Path(local_run_dir))
        for attempt in (1, 2):
            alloc = self._alloc
            name = f"{_safe(self._step)}-{uuid.uuid4().hex[:6]}"
            req = f"{alloc.dir}/requests/{name}"
            cmd = (
                f"{_shell.untar_command(remote_run_dir, 0o700)} && "
                f"{{ [ -d {shlex.quote(alloc.dir + '/requests')} ] || exit {EXIT_SESSION_CLOSED}; }} && "
                f"printf '%s\\n' {shlex.quote(remote_run_dir)} > {shlex.quote(req + '.tmp')} && "
                f"mv {shlex.quote(req + '.tmp')} {shlex.quote(req)}"
            )
            res = self._transport.run(cmd, timeout=SESSION_SUBMIT_TIMEOUT_S, stdin=data)
            if res.exit_code == EXIT_SESSION_CLOSED and attempt == 1:
                self._alloc = self._acquire(self._run_id, force_new=True)
                continue
            if not res.ok:
                raise RemoteCommandError(
                    f"queue step {name} in session {alloc.dir}",
                    res.exit_code,
                    res.stdout,
                    res.stderr,
                    hint="the session directory must be writable; see its agent.log",
                )
            self._submitted_at[alloc.job_id] = time.time()
            return JobHandle(
                backend=self.name, job_id=alloc.job_id, run_dir=remote_run_dir, cluster=self.cluster
            )
        raise AssertionError("unreachable")

    def launched(self, context: Any, handle: JobHandle) -> None:
        """Record the step in the Dagster run (reattach after a Dagster restart). Not in the
        machine's launch records: the reconcile sensor judges allocations by their run, and
        the allocation ends by its idle timeout anyway."""
        self._context = context
        if self.records_launches:
            from dagster_hpc._dagster_adapter import record_launch

            record_launch(context, handle)
        context.log.info(f"dagster-hpc: step queued in session allocation {handle.job_id}")

    def find_reattach(self, context: Any) -> ReattachDecision | None:
        """The step an earlier attempt queued in a session allocation: waited for when it is
        still queued or running there (the allocation lives), read when it finished with exit
        code 0; otherwise (it failed, or its allocation ended without running it) a new step of
        this run's allocation. Never a guess when squeue cannot be asked (SubmissionError)."""
        self._context = context
        if not self.reattach:
            return None
        from dagster_hpc import _dagster_adapter
        from dagster_hpc.backends import slurm_reattach

        handle = _dagster_adapter.latest_launch(context)
        if handle is None:
            return None
        if handle.backend != self.name or handle.cluster != self.cluster:
            return ReattachDecision(
                False, handle,
                f"not reattaching to {handle.backend} job {handle.job_id} on {handle.cluster}: this "
                f"step now runs in a session allocation on {self.cluster}; starting a new step",
            )  # fmt: skip
        where = f"session step in allocation {handle.job_id} (run dir {handle.run_dir})"
        decision = slurm_reattach.decide(
            handle, slurm_reattach.probe(self._transport, handle), where=where
        )
        if decision.reattach:
            if self.records_launches:
                _dagster_adapter.record_reattach(context)  # a later retry of THIS run finds it
            self._run_id, self._step = context.run.run_id, _op_name(context)
            self._alloc = Allocation(handle.job_id, allocation_dir(handle.run_dir))
        return decision

    def poll(self, handle: JobHandle) -> JobStatus:
        return self._poller.status(
            handle.job_id, submitted_at=self._submitted_at.get(handle.job_id)
        )

    def cancel(self, handle: JobHandle) -> None:
        """Dagster termination: the whole allocation goes (scancel), nothing stays queued.

        Dagster interrupts a step again while it cancels (the multiprocess executor relays the
        termination to every step): the scancel runs with SIGINT held off, or a second interrupt
        would abort it and leave the allocation running."""
        with _interrupts_held():
            super().cancel(handle)
            path = _record_path(self.cluster, self._run_id, self.session.group)
            with _locked(path):
                rec = _read(path)
                if rec.get("job_id") == handle.job_id:
                    rec["stopped"] = True
                    _write(path, rec)

    def _step_handle(self, handle: JobHandle) -> JobHandle:
        sid = self._step_ids.get(handle.run_dir)
        if sid is None:
            raw = self._transport.read_from(f"{handle.run_dir}/{STEP_ID_FILE}", 0, max_bytes=64)
            text = raw.decode(errors="replace").strip()
            sid = text if text.isdigit() else ""
            self._step_ids[handle.run_dir] = sid
        job = f"{handle.job_id}.{sid}" if sid else handle.job_id
        return JobHandle(
            backend=self.name, job_id=job, run_dir=handle.run_dir, cluster=self.cluster
        )

    def job_ended(
        self, handle: JobHandle, exit_code: int | None, *, remove_run_dir: bool = False
    ) -> None:
        super().job_ended(self._step_handle(handle), exit_code, remove_run_dir=remove_run_dir)

    def outcome(self, handle: JobHandle, exit_code: int | None) -> JobOutcome:
        step = self._step_handle(handle)
        if step.job_id == handle.job_id:  # the step never started (the allocation ended first)
            state = self.poll(handle).state
            out = JobOutcome(
                state=state if state.finished else JobState.CANCELLED,
                exit_code=exit_code,
                metadata={"slurm/allocation_id": handle.job_id, "slurm/run_dir": handle.run_dir},
            )
        else:
            out = super().outcome(step, exit_code)
            out.metadata["slurm/allocation_id"] = handle.job_id
            out.metadata["slurm/step_id"] = step.job_id.split(".", 1)[1]
        self._step_done(handle)
        return out

    def failure_error(
        self, handle: JobHandle, outcome: JobOutcome, stderr_tail: list[str]
    ) -> PayloadError:
        return super().failure_error(self._step_handle(handle), outcome, stderr_tail)

    def _step_done(self, handle: JobHandle) -> None:
        """Record this step as done; the last step of the run stops the allocation."""
        expected = _expected_steps(self._context)
        path = _record_path(self.cluster, self._run_id, self.session.group)
        with _locked(path):
            rec = _read(path)
            if rec.get("job_id") != handle.job_id:
                return
            done = set(rec.get("done", [])) | {self._step}
            rec["done"] = sorted(done)
            last = bool(expected) and expected <= done
            if last:
                rec["stopped"] = True
            _write(path, rec)
        if last:
            assert self._alloc is not None
            self._transport.run(
                f"touch {shlex.quote(self._alloc.dir + '/' + STOP_FILE)}",
                timeout=SESSION_QUERY_TIMEOUT_S,
            )
            if self._context is not None:
                self._context.log.info(
                    f"dagster-hpc: last step of the run in session allocation {handle.job_id}: it ends now"
                )


@contextmanager
def _interrupts_held():
    """SIGINT ignored for the block (main thread only; elsewhere signals never arrive anyway)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _expected_steps(context: Any) -> set[str]:
    """The step keys this run executes (the allocation's users), as far as the context tells."""
    if context is None:
        return set()
    run = context.run
    if run.step_keys_to_execute:
        return set(run.step_keys_to_execute)
    try:
        return {node.name for node in context.job_def.nodes}
    except AttributeError:
        return set()


def allocation_dir(step_run_dir: str) -> str:
    """The session directory of a step's run dir (``<session dir>/steps/<step>-<id>``)."""
    session_dir, sep, _ = step_run_dir.rpartition(f"/{STEPS_DIR}/")
    if not sep:
        raise ConfigError(f"{step_run_dir!r} is not the run directory of a session step")
    return session_dir


def _op_name(context: Any) -> str:
    return getattr(context, "op_execution_context", context).op.name


def make_session_backend(slurm: Any, session: SessionConfig) -> SessionBackend:
    """SlurmResource + SessionConfig -> the per-run backend (validates before connecting)."""
    check_session(session)
    plain = slurm.make_backend()
    return SessionBackend(
        plain.transport,
        session=session,
        cluster=plain.cluster,
        queue=plain.queue,
        remote_base_dir=plain.remote_base_dir,
        python=plain.python,
        activate=plain.activate,
        env=plain.env,
        reattach=plain.reattach,
    )
