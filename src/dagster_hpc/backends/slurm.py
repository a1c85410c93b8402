"""Slurm mode: the job script goes to the cluster through a Transport and runs under sbatch.

Round trips before the job is queued, on a warm connection: one preflight per process and
settings (interpreter, activation, partitions, base dir; cached), then ONE that unpacks the run
directory (0700) and runs ``sbatch --parsable`` in the same shell. While it runs: one batched
read of the run-dir files per tail tick (the Pipes reader) and one ``squeue`` per poll tick for
all jobs of all processes (``SlurmPoller``). The job's exit_code file is the truth about the
outcome; sacct adds metrics on success and failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from dagster_hpc import launch_records
from dagster_hpc.backends.base import (
    Backend,
    JobHandle,
    JobOutcome,
    JobState,
    JobStatus,
    ReattachDecision,
    check_removable,
)
from dagster_hpc.backends.slurm_errors import final_state, slurm_job_error
from dagster_hpc.backends.slurm_fs import job_full_error, says_full, staging_full_error
from dagster_hpc.backends.slurm_pending import PendingWatch
from dagster_hpc.backends.slurm_poller import (
    SlurmPoller,
    default_cache_dir,
    shared_poller,
    slurm_state,
)
from dagster_hpc.backends.slurm_sacct import (
    SACCT_SETTLE_BUDGET_S,
    SACCT_TIMEOUT_S,
    final_record_command,
    settle,
)
from dagster_hpc.backends.slurm_script import (
    ActivatedLauncher,
    check_preflight,
    parse_preflight,
    preflight_command,
    sbatch_header,
)
from dagster_hpc.backends.slurm_submit import REMOVED_MARK, submit_command
from dagster_hpc.errors import (
    AuthenticationError,
    CancelNotConfirmedError,
    ConfigError,
    FilesystemFullError,
    HostKeyError,
    RemoteCommandError,
    SlurmJobError,
    SubmissionError,
    TransportError,
)
from dagster_hpc.metrics import (
    accounting_disabled,
    accounting_unreachable,
    unavailable_metadata,
)
from dagster_hpc.prepared import PreparedJob, StepInfo, choose_python, step_for_context
from dagster_hpc.queue import QueueConfig
from dagster_hpc.request import JobRequest
from dagster_hpc.rundir import DEFAULT_REMOTE_BASE, remote_path_expr
from dagster_hpc.transport import _shell
from dagster_hpc.transport.base import CommandResult, Transport

if TYPE_CHECKING:
    from dagster_hpc.attempts import Attempt
    from dagster_hpc.backends.base import AnyContext
    from dagster_hpc.envs.config import EnvConfig
    from dagster_hpc.live_metrics import LiveMetrics
    from dagster_hpc.metrics import JobMetrics

# One batched read of messages/stdout/stderr/exit_code per tick costs ~3 ms over a warm asyncssh
# connection: 10 reads a second keep live logs live and notice a short job's end within 0.1 s.
SLURM_TAIL_INTERVAL_S = 0.1
# Once a job has printed nothing for SLURM_TAIL_IDLE_AFTER_S, read once a second: each read is a
# shell on the login node, and a quiet job running for hours must not cost 10 of them a second.
SLURM_TAIL_IDLE_INTERVAL_S = 1.0
SLURM_TAIL_IDLE_AFTER_S = 30.0
# How often the facade asks the poller; the poller itself queries slurmctld at most once per
# POLL_FLOOR_S machine-wide, so asking more often only reads the shared cache file.
SLURM_POLL_INTERVAL_S = 1.0
# The first squeue for a job comes 3 s after the wait began: the login node's watch of the run
# dir reports the job's end by itself (the exit_code file), so a short job costs no scheduler
# query at all; a job still pending after 3 s has its reason logged then.
SLURM_FIRST_POLL_AFTER_S = 3.0
# Once squeue says the job runs, the next squeue (for this job's wait) comes 10 s later, the
# watch's first window (pipes/reader.WATCH_WINDOW_MIN_S): a job that ends normally is seen from
# its exit_code file, so a short job pays one scheduler query whatever its length (a 9 s job made
# 3 in the 2 s-floor backoff), and a job killed without one is noticed within 10 s + the grace.
# The machine-wide poller's own backoff (up to 30 s) still applies on top for long jobs.
SLURM_RUNNING_POLL_S = 10.0
# After squeue says the job ended, how long to wait for the exit_code file to become visible
# (shared filesystems cache attributes for a few seconds); killed jobs never write it.
SLURM_EXIT_FILE_GRACE_S = 5.0
# Staging + sbatch: a busy slurmctld can take tens of seconds to accept a job.
SUBMIT_TIMEOUT_S = 120.0
# The preflight runs python once (import dagster_pipes) and sinfo: seconds on a loaded login node.
PREFLIGHT_TIMEOUT_S = 60.0
# After scancel, how long we wait for Slurm to confirm the job left RUNNING (KillWait is 30 s by
# default, plus epilog time).
CANCEL_CONFIRM_TIMEOUT_S = 90.0
CANCEL_CHECK_INTERVAL_S = 0.5
# Printed after a successful removal folded into the sacct round trip (never a sacct row).
RUN_DIR_REMOVED_MARK = "dagster-hpc-run-dir-removed"

# A good preflight answer is shared with the other processes of this machine for this long:
# environments and partitions change rarely, and a payload whose interpreter vanished meanwhile
# still fails with its own clear error (exit 127 and the shell's message in stderr).
PREFLIGHT_SHARE_TTL_S = 600.0
# bump when preflight_command answers more (2: partition limits, 3: MaxArraySize, 4: gres)
PREFLIGHT_FORMAT = "6"  # 5: partition node counts (slurm_nodes), 6: flock

# Preflight answers per process: (cluster, base, python, activate) -> parsed answer. A second
# asset in the same process costs no round trip.
_PREFLIGHT_CACHE: dict[tuple[str, str, str, str], dict[str, str]] = {}
_PREFLIGHT_LOCK = threading.Lock()
_PREFLIGHT_ASKING: dict[tuple[str, str, str, str], threading.Lock] = {}  # one question per key


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)[:80]


def base_dir_expr(base: str) -> str:
    """Shell expression for the run-directory base (``rundir.remote_path_expr``)."""
    return remote_path_expr(base)


class SlurmBackend(Backend):
    """Submits job.sh with sbatch through ``transport``. One instance per ``run()`` call."""

    name = "slurm"
    tail_interval_s = SLURM_TAIL_INTERVAL_S
    tail_idle_interval_s = SLURM_TAIL_IDLE_INTERVAL_S
    tail_idle_after_s = SLURM_TAIL_IDLE_AFTER_S
    poll_interval_s = SLURM_POLL_INTERVAL_S
    first_poll_after_s = SLURM_FIRST_POLL_AFTER_S
    running_poll_interval_s = SLURM_RUNNING_POLL_S
    exit_file_grace_s = SLURM_EXIT_FILE_GRACE_S

    def __init__(
        self,
        transport: Transport,
        *,
        cluster: str,
        queue: QueueConfig | None = None,
        remote_base_dir: str = DEFAULT_REMOTE_BASE,
        python: str | None = None,
        activate: str | None = None,
        poller: SlurmPoller | None = None,
        record_launch: bool = True,
        env: EnvConfig | None = None,  # built/shipped or pre-deployed env (resolved in prepare)
        reattach: bool = True,  # a retry of a step finds the job an earlier attempt submitted
    ):
        base_dir_expr(remote_base_dir)  # validates
        self._transport = transport
        self.cluster = cluster
        self.queue = queue or QueueConfig()
        self.remote_base_dir = remote_base_dir
        self.python = python
        self.activate = activate
        self.env = env
        self._poller = poller or shared_poller(transport, cluster)
        self.records_launches = record_launch
        self.reattach = reattach
        # caches of this backend's own cluster answers (never state handed from prepare to submit)
        self._base_abs: str | None = None
        self._submitted_at: dict[str, float] = {}
        self._sacct_prefetch: dict[str, tuple[int | None, Future]] = {}
        self._live: dict[str, LiveMetrics] = {}  # job id -> sstat samples while it runs
        self._pending = PendingWatch(cluster=cluster)
        # job id -> the context its launch was recorded with (launch_records.forget needs it)
        self._launch_contexts: dict[str, AnyContext] = {}
        self.effective_queue: QueueConfig | None = None  # set only by the legacy prepare call
        self._removed: set[str] = set()  # run dirs removed with the final sacct query

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def poller(self) -> SlurmPoller:
        return self._poller

    # --- before anything is written ------------------------------------------------------
    def prepare(self, step: StepInfo, request: JobRequest, *, check: bool = True) -> PreparedJob:
        """Merge the queue (resource < asset metadata < run(queue=)), resolve the environment
        (env=), verify the cluster side (one cached round trip; skipped when ``check`` is False)
        and return everything the scripts depend on."""
        if not isinstance(step, StepInfo):
            # the pre-PreparedJob call ``prepare(context, request)``: callers written against it
            # read the decisions back from the backend (new code uses the returned PreparedJob)
            job = self.prepare(step_for_context(step), request, check=check)
            self.effective_queue, self.default_python = job.queue, job.python
            return job
        queue = self.queue.merged(step.queue_override).merged(request.queue)
        queue.check_requeue_effective()
        python, activate = self.python, self.activate
        if self.env is not None:
            python, activate = self._use_env(step, queue)
        python = choose_python(slurm=python, default=self.default_python)
        if check:
            answer = self._preflight(python, activate)
            check_preflight(
                answer,
                cluster=self.cluster,
                base_dir=self.remote_base_dir,
                python=python,
                activate=activate,
                partition=queue.partition,
                need_python=(
                    request.launcher.name == "python"
                    or self.python is not None
                    or self.env is not None
                ),
                queue=queue,
            )
        if activate:
            request = dataclasses.replace(
                request, launcher=ActivatedLauncher(request.launcher, activate)
            )
        return PreparedJob(
            request, python=python, header_lines=sbatch_header(queue, step=step.name), queue=queue
        )

    def _use_env(self, step: StepInfo, queue: QueueConfig) -> tuple[str, str | None]:
        """EnvConfig -> a verified interpreter on the cluster (envs/), before the preflight:
        a missing or broken environment fails here, before any job exists. Returns the
        interpreter and the activation script to use."""
        from dagster_hpc.envs.resolve import queue_srun_options, resolve_env

        if self.python is not None:
            raise ConfigError(
                f"SlurmResource sets both python={self.python!r} and env=: the environment provides "
                "the interpreter; remove one of them"
            )
        assert self.env is not None
        ref = resolve_env(
            self._transport,
            self.env,
            cluster=self.cluster,
            runs_base=self.remote_base_dir,
            partition=queue.partition,
            slurm_options=queue_srun_options(queue),
            log=step.log,
        )
        return ref.python, self.activate if self.activate is not None else (ref.activate or None)

    def _preflight(self, python: str | None = None, activate: str | None = None) -> dict[str, str]:
        python = python or choose_python(slurm=self.python, default=self.default_python)
        activate = activate if activate is not None else self.activate
        key = (self.cluster, self.remote_base_dir, python, activate or "")
        with _PREFLIGHT_LOCK:
            cached = _PREFLIGHT_CACHE.get(key)
        if cached is None:
            cached = _read_shared_preflight(key)
        if cached is None:
            cached = self._ask_preflight(key, python, activate)
        if cached.get("base") == "ok":  # cache only complete answers
            with _PREFLIGHT_LOCK:
                _PREFLIGHT_CACHE[key] = cached
        base = self.remote_base_dir
        home = cached.get("home", "")
        self._base_abs = home + base[1:] if base.startswith("~") else base
        return cached

    def _ask_preflight(
        self, key: tuple[str, str, str, str], python: str, activate: str | None
    ) -> dict[str, str]:
        """One round trip, once per key at a time: steps on threads of one process (the
        concurrent executor) wait for the first one's answer instead of asking too."""
        with _PREFLIGHT_LOCK:
            asking = _PREFLIGHT_ASKING.setdefault(key, threading.Lock())
        with asking:
            with _PREFLIGHT_LOCK:
                cached = _PREFLIGHT_CACHE.get(key)
            if cached is not None:
                return cached
            cmd = "echo home=$HOME; " + preflight_command(
                base_dir=base_dir_expr(self.remote_base_dir), python=python, activate=activate
            )
            result = self._transport.run(cmd, timeout=PREFLIGHT_TIMEOUT_S)
            answer = parse_preflight(result.stdout)
            if answer.get("base") == "ok" and answer.get("python") == "ok":
                _write_shared_preflight(key, answer)  # only a fully good answer is shared
            if answer.get("base") == "ok":
                with _PREFLIGHT_LOCK:
                    _PREFLIGHT_CACHE[key] = answer  # the waiting threads find it at once
            return answer

    def preflight_answer(self) -> dict[str, str]:
        """The (cached) preflight answer: partitions, limits, MaxArraySize, ..."""
        return self._preflight()

    def run_dir_for(self, run_id: str, step: str) -> str:
        if self._base_abs is None:
            self._preflight()
        assert self._base_abs is not None
        return f"{self._base_abs}/{_safe(run_id)}/{_safe(step)}-{uuid.uuid4().hex[:8]}"

    # --- submit / watch / cancel -----------------------------------------------------------
    def submit(self, local_run_dir: str, remote_run_dir: str) -> JobHandle:
        data = _shell.tar_directory(Path(local_run_dir))
        cmd = submit_command(_shell.untar_command(remote_run_dir, 0o700), remote_run_dir)
        try:
            result = self._transport.run(cmd, timeout=SUBMIT_TIMEOUT_S, stdin=data)
        except (AuthenticationError, HostKeyError):
            raise  # never authenticated: nothing can have been submitted, and a retry cannot help
        except TransportError as exc:
            # the connection dropped mid-submit: sbatch may have run. Never leave a job behind
            # unwatched: find it by its (unique) working directory, or say it was not submitted.
            found = self._find_job_by_workdir(remote_run_dir, cause=exc)
            if found is None:
                raise TransportError(
                    f"submitting {remote_run_dir} on {self.cluster} failed and no job with that working "
                    f"directory exists: nothing was submitted. Retry the run.\n{exc}"
                ) from exc
            result = CommandResult(0, found + "\n", "")
        if not result.ok and says_full(result.stderr):
            raise staging_full_error(
                remote_run_dir, self.cluster, result.stderr, removed=REMOVED_MARK in result.stderr
            )
        if not result.ok:
            raise RemoteCommandError(
                "sbatch --parsable job.sh (in " + remote_run_dir + ")",
                result.exit_code,
                result.stdout,
                result.stderr,
                hint="Slurm refused the job: read its message above (partition, account, QOS or "
                "limits); print the job script with ComputeResource.render_job_script(...)"
                + (
                    "; the staged run directory was removed"
                    if REMOVED_MARK in result.stderr
                    else ""
                ),
            )
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise SubmissionError(
                f"sbatch answered {result.stdout!r}, not a job id (run dir {remote_run_dir}): it is "
                f"unknown whether a job was queued; check `squeue --me` on {self.cluster} for the "
                "working directory before retrying",
                run_dir=remote_run_dir,
                answer=result.stdout,
            )
        handle = JobHandle(
            backend=self.name, job_id=job_id, run_dir=remote_run_dir, cluster=self.cluster
        )
        self._submitted_at[job_id] = time.time()
        self._poller.reset_interval()
        return handle

    def submitting(self, context: AnyContext, run_dir: str) -> None:
        """Record the intent (a handle without a job id) before staging: if this process dies
        before sbatch answers, a re-execution finds the job by ``run_dir`` (slurm_reattach)."""
        if self.records_launches and self.reattach:
            from dagster_hpc._dagster_adapter import record_launch

            record_launch(
                context,
                JobHandle(backend=self.name, job_id="", run_dir=run_dir, cluster=self.cluster),
            )

    def launched(self, context: AnyContext, handle: JobHandle) -> None:
        """Record the launch in the Dagster run (reattach after a restart) and on this machine
        (the reconcile sensor), before any waiting."""
        if self.records_launches:
            from dagster_hpc._dagster_adapter import record_launch

            record_launch(context, handle)
        self._launch_contexts[handle.job_id] = context
        launch_records.remember(context, handle)

    def find_reattach(self, context: AnyContext) -> ReattachDecision | None:
        """Reattach to the job an earlier attempt of this step submitted (slurm_reattach)."""
        if not self.reattach:
            return None
        from dagster_hpc.backends.slurm_reattach import find_reattach

        decision = find_reattach(
            context, self._transport, cluster=self.cluster, record=self.records_launches
        )
        if decision is not None and decision.reattach:
            self._launch_contexts[decision.handle.job_id] = context
            launch_records.remember(context, decision.handle)  # this run owns the job now
        return decision

    def _find_job_by_workdir(self, run_dir: str, *, cause: Exception) -> str | None:
        """Job id of our job whose working directory is ``run_dir`` (run dirs are unique).

        None only when the queue was really checked; when the check itself fails we cannot
        know whether sbatch ran, and say so instead of inviting a duplicate submission.
        """
        check = "squeue --me --noheader --states=all --format='%i|%Z'"
        try:
            res = self._transport.run(check, timeout=SACCT_TIMEOUT_S)
        except TransportError as exc:
            res = CommandResult(255, "", str(exc))
        if not res.ok:
            raise TransportError(
                f"submitting {run_dir} on {self.cluster} was interrupted ({cause}) and the check "
                f"whether sbatch ran failed too ({res.stderr.strip()[-300:]}): it is UNKNOWN whether "
                f"a job was submitted. Before retrying, run `{check}` on the login node and look for "
                f"the working directory {run_dir}; if it is there, that job is yours (do not resubmit)."
            ) from cause
        for line in res.stdout.splitlines():
            job_id, _, workdir = line.strip().partition("|")
            if workdir.rstrip("/") == run_dir.rstrip("/") and job_id.isdigit():
                return job_id
        return None

    def poll(self, handle: JobHandle) -> JobStatus:
        status = self._poller.status(
            handle.job_id, submitted_at=self._submitted_at.get(handle.job_id)
        )
        if status.state is JobState.RUNNING:
            self._live_metrics(handle).tick()  # shared sstat, at most once per interval
        self._pending.check(handle, status, cancel=self.cancel)  # a limit that never clears
        return status

    def _live_metrics(self, handle: JobHandle) -> LiveMetrics:
        from dagster_hpc.live_metrics import LiveMetrics, SstatSampler

        live = self._live.get(handle.job_id)
        if live is None:
            context = self._launch_contexts.get(handle.job_id)
            log = getattr(getattr(context, "log", None), "info", None) or (lambda _m: None)
            live = LiveMetrics(SstatSampler(self._transport, self.cluster), handle.job_id, log)
            self._live[handle.job_id] = live
        return live

    def cancel(self, handle: JobHandle) -> None:
        """scancel, then wait until Slurm confirms the job is no longer pending or running."""
        q = shlex.quote(handle.job_id)
        self._transport.check(
            f"scancel {q}", timeout=SUBMIT_TIMEOUT_S, hint=f"cancel job {handle.job_id} by hand"
        )
        deadline = time.monotonic() + CANCEL_CONFIRM_TIMEOUT_S
        state = JobState.UNKNOWN
        while time.monotonic() < deadline:
            try:
                res = self._transport.run(
                    f"squeue --noheader --states=all --jobs {q} --format=%T",
                    timeout=SACCT_TIMEOUT_S,
                )
            except TransportError:
                time.sleep(CANCEL_CHECK_INTERVAL_S)
                continue
            text = res.stdout.strip()
            state = slurm_state(text.splitlines()[0]) if text else JobState.UNKNOWN
            if (res.ok and not text) or state.finished:  # gone from the queue, or ended
                launch_records.forget(self._launch_contexts.get(handle.job_id), handle)
                return
            time.sleep(CANCEL_CHECK_INTERVAL_S)
        raise CancelNotConfirmedError(
            f"scancel {handle.job_id} was sent but the job is still {state.value} after "
            f"{CANCEL_CONFIRM_TIMEOUT_S:.0f} s on {self.cluster}: check `squeue -j {handle.job_id}` and ask the admins",
            job_id=handle.job_id,
            state=state.value,
            run_dir=handle.run_dir,
        )

    # --- outcome ---------------------------------------------------------------------------
    def job_ended(
        self, handle: JobHandle, exit_code: int | None, *, remove_run_dir: bool = False
    ) -> None:
        """Start the sacct query now, so it runs while the Pipes reader drains the logs; the
        first query also removes the run dir when asked (one round trip for both)."""
        future: Future = Future()
        remove = handle.run_dir if remove_run_dir else None
        if remove:
            check_removable(remove)

        def fetch() -> None:
            try:
                future.set_result(self._settled_sacct(handle.job_id, remove=remove))
            except BaseException as exc:  # noqa: BLE001 - handed to outcome(), which re-raises it
                future.set_exception(exc)

        threading.Thread(
            target=fetch, name=f"dagster-hpc-sacct-{handle.job_id}", daemon=True
        ).start()
        self._sacct_prefetch[handle.job_id] = (exit_code, future)

    def outcome(self, handle: JobHandle, exit_code: int | None) -> JobOutcome:
        # The exit_code file decides success; the numbers wait for Slurm's final record (bounded):
        # a record taken while the job is still RUNNING/COMPLETING lacks MaxRSS and the final
        # elapsed/CPU time, and may lack the allocated TRES. Usually the first query is final.
        # the job ended: the sensor can ignore it
        context = self._launch_contexts.pop(handle.job_id, None)
        launch_records.forget(context, handle)
        prefetched = self._sacct_prefetch.pop(handle.job_id, None)
        if prefetched is not None and prefetched[0] == exit_code:
            text, metrics = prefetched[1].result(
                timeout=SACCT_SETTLE_BUDGET_S + 2 * SACCT_TIMEOUT_S
            )
        else:
            text, metrics = self._settled_sacct(handle.job_id)
        scheduler = self.poll(handle).state if metrics is None else JobState.UNKNOWN
        state = final_state(exit_code, metrics, scheduler)
        base = {
            "slurm/cluster": self.cluster,
            "slurm/run_dir": handle.run_dir,
        }
        if metrics is not None:
            md = {**base, **metrics.to_metadata(), "slurm/state": state.value}
        elif accounting_disabled(text):
            md = {
                **base,
                **unavailable_metadata(handle.job_id, "Slurm accounting storage is disabled"),
                "slurm/state": state.value,
            }
        elif unreachable := accounting_unreachable(text):
            why = (
                "slurmdbd (Slurm's accounting database) could not be reached, so sacct has no "
                f"numbers; the outcome comes from the job's exit_code file ({unreachable})"
            )
            md = {**base, **unavailable_metadata(handle.job_id, why), "slurm/state": state.value}
        else:
            md = {
                **base,
                **unavailable_metadata(handle.job_id, "the job has no sacct record (yet)"),
                "slurm/state": state.value,
            }
        if handle.job_id in self._live:
            md.update(self._live.pop(handle.job_id).metadata())  # peak, series, plot
        if context is not None:
            from dagster_hpc.cost import add_to_run_tags

            add_to_run_tags(context, md)  # the run's node/CPU/GPU-hour tags
        if exit_code is not None:
            md["slurm/payload_exit_code"] = exit_code
        # execute() treats exit_code == 0 as success: only a COMPLETED job may report 0
        code = exit_code if (state is JobState.COMPLETED or exit_code) else None
        return JobOutcome(state=state, exit_code=code, metadata=md)

    def run_dir_removed(self, handle: JobHandle) -> bool:
        return handle.run_dir in self._removed

    def attempt_states(
        self, handle: JobHandle, attempts: list[Attempt]
    ) -> list[tuple[str, int | None]] | None:
        """sacct --duplicates (one round trip), only for a requeued job with an attempt the
        wrapper could not name (preempted, timed out, killed): Slurm's state for each."""
        from dagster_hpc.attempts import parse_duplicates

        if len(attempts) < 2 or all(a.how not in (None, "terminated") for a in attempts):
            return None
        command = (
            f"sacct --duplicates -X --parsable2 --noheader --jobs {shlex.quote(handle.job_id)} "
            "--starttime now-7days --format=JobID,State,ElapsedRaw"
        )
        try:
            result = self._transport.run(command, timeout=SACCT_TIMEOUT_S)
        except TransportError:
            return None  # the metadata then says TERMINATED / ENDED_UNRECORDED
        return parse_duplicates(result.stdout, handle.job_id) or None

    def _settled_sacct(
        self, job_id: str, remove: str | None = None
    ) -> tuple[str, JobMetrics | None]:
        """Slurm's final record of the job (bounded, ``slurm_sacct.settle``); a failing sacct is
        not an error (the metadata then says the numbers are unavailable). ``remove``: a run dir
        to delete in the same round trip as the first query (after sacct, whatever it says)."""
        suffix, removed = self.folded_removal(remove)
        # final_record.sh is for a whole job: asked for a job step ("<allocation>.<step>", a
        # session step), squeue lists the allocation, still RUNNING, so it would wait out all
        # its pauses (~1.3 s per step) and give the step the allocation's TRES
        single_job = job_id.isdigit()
        got = settle(
            self._transport,
            [job_id],
            [job_id],
            first_command=final_record_command(job_id) if single_job else None,
            first_suffix=suffix,
            on_first=removed,
        )
        return got.text.replace(RUN_DIR_REMOVED_MARK, ""), got.metrics.get(job_id)

    def folded_removal(self, run_dir: str | None) -> tuple[str, Callable[[str], None]]:
        """The run dir's removal folded into the first round trip of a final sacct settle (one
        round trip less per step): the shell suffix, and the ``on_first`` callback that records
        a removal that worked (``run_dir_removed``; retention then has nothing left to do)."""
        if not run_dir:
            return "", lambda stdout: None

        def removed(stdout: str) -> None:
            if RUN_DIR_REMOVED_MARK in stdout:
                self._removed.add(run_dir)

        return f"; rm -rf -- {shlex.quote(run_dir)} && echo {RUN_DIR_REMOVED_MARK}", removed

    def failure_error(
        self, handle: JobHandle, outcome: JobOutcome, stderr_tail: list[str]
    ) -> SlurmJobError | FilesystemFullError:
        state = outcome.state if outcome.state is not JobState.COMPLETED else JobState.FAILED
        exit_code = outcome.metadata.get("slurm/payload_exit_code")
        full = job_full_error(
            self._transport,
            run_dir=handle.run_dir,
            cluster=self.cluster,
            job_id=handle.job_id,
            state=state.value,
            exit_code=exit_code,
            stderr_tail="\n".join(stderr_tail),
            metadata=outcome.metadata,
        )
        if full is not None:
            return full
        return slurm_job_error(
            state=state,
            job_id=handle.job_id,
            exit_code=exit_code,
            stderr_tail="\n".join(stderr_tail),
            run_dir=handle.run_dir,
            cluster=self.cluster,
            metadata=outcome.metadata,
        )


def _shared_preflight_path(key: tuple[str, str, str, str]) -> Path:
    # the format version is part of the name: an answer from an older preflight is never reused
    digest = hashlib.sha256("\0".join((PREFLIGHT_FORMAT, *key)).encode()).hexdigest()[:16]
    return default_cache_dir() / f"preflight-{digest}.json"


def _read_shared_preflight(key: tuple[str, str, str, str]) -> dict[str, str] | None:
    """A good preflight answer another process of this machine got recently (multiprocess
    executor: the first step pays the round trip, the other steps reuse its answer)."""
    path = _shared_preflight_path(key)
    try:
        data = json.loads(path.read_text())
        if time.time() - float(data["at"]) < PREFLIGHT_SHARE_TTL_S and data["key"] == list(key):
            return dict(data["answer"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign file: ask the cluster again
    return None


def _write_shared_preflight(key: tuple[str, str, str, str], answer: dict[str, str]) -> None:
    path = _shared_preflight_path(key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # threads too
    tmp.write_text(json.dumps({"at": time.time(), "key": list(key), "answer": answer}))
    os.replace(tmp, path)
