"""Run the items of one step as a job array (Slurm) or a bounded pool of processes (local).

Round trips on Slurm: the cached preflight, ONE that unpacks the run dir and submits every chunk
(``sbatch`` once per MaxArraySize tasks), then per tick one batched read of all tasks' files
and, every poll interval, one ``squeue`` for the array jobs; one ``sacct`` at the end gives
every task's metrics.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_hpc import cancellation, step_calls
from dagster_hpc.allocation.array import (
    ARRAY_SCRIPT,
    ARRAYS_FILE,
    SUBMIT_LOCK,
    SUBMIT_LOCK_WAIT_S,
    check_throttle,
    chunks,
    parse_arrays_file,
    render_array_script,
    script_tasks,
    submit_command,
    unrecorded_chunks,
)
from dagster_hpc.allocation.results import MultiTaskOutcome, TaskResult
from dagster_hpc.allocation.tasks import (
    TaskChannel,
    TaskItem,
    TaskReader,
    task_dir,
    write_multitask_dir,
)
from dagster_hpc.backends.base import JobHandle, JobState
from dagster_hpc.backends.slurm_poller import slurm_state
from dagster_hpc.backends.slurm_sacct import collect_final, settle
from dagster_hpc.errors import PayloadError, RemoteCommandError, SubmissionError, TransportError
from dagster_hpc.request import JobRequest
from dagster_hpc.rundir import EXIT_CODE
from dagster_hpc.transport import _shell
from dagster_hpc.transport.base import CommandResult

ARRAY_BACKEND = "slurm-array"  # JobHandle.backend of a recorded array launch
# How often the array jobs' squeue state is asked (one query for all chunks). The exit_code
# files, read every tail tick, usually announce the end first.
ARRAY_POLL_INTERVAL_S = 2.0
# How often, while tasks still run, one sacct asks for the final records of the tasks that
# ended (their exit_code file is there): slurmdbd has a task's record ~0.5-3 s after its end, so
# the final settle then waits for the last tasks' records only, not for 100.
ARRAY_EARLY_SACCT_INTERVAL_S = 2.0
# After squeue lost every array job, how long to wait for missing exit_code files (shared
# filesystems publish late; killed tasks never write one).
ARRAY_EXIT_FILE_GRACE_S = 5.0
# Staging + N sbatch calls in one shell: a busy slurmctld takes seconds per submission.
ARRAY_SUBMIT_TIMEOUT_S = 300.0
ARRAY_QUERY_TIMEOUT_S = 60.0
# Local mode: how often the pool checks its processes; SIGTERM grace on termination.
LOCAL_POOL_TICK_S = 0.02
LOCAL_CANCEL_GRACE_S = 10.0
# One batched read of every task's files per tick over SSH (3 ms on a warm connection).
SLURM_TASK_TAIL_S = 0.2
# The tick of an array while squeue still lists pending tasks: each batched read of 100 tasks
# costs ~25-40 ms of CPU on the login node and here (sshd, bash, stat, the parse, the log
# events), which on a small login node is taken from the tasks themselves. Once nothing is
# pending (the last tasks run) the tick is SLURM_TASK_TAIL_S again, so the end is seen at once.
ARRAY_TASK_TAIL_PENDING_S = 0.5
SLURM_TASK_TAIL_IDLE_S = 1.0
SLURM_TASK_TAIL_IDLE_AFTER_S = 30.0
LOCAL_TASK_TAIL_S = 0.02
# The final settle asks for at most this many tasks by task id (``<array>_<i>``); more are
# asked by array job id (a shorter command line, sacct's answer then holds every task).
SACCT_BY_TASK_MAX = 200


class _NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _context_data_fn(context: Any, extras: Mapping[str, Any], partition_mode: bool):
    from dagster_hpc._dagster_adapter import pipes_context_for_item, pipes_step_context

    step_data = pipes_step_context(context)  # once: Dagster queries the instance per call

    def context_for(i: int, item: TaskItem) -> dict[str, Any]:
        merged = {
            **extras,
            **item.extras,
            "dagster_hpc_item_key": item.key,
            "dagster_hpc_item_index": i,
        }
        return pipes_context_for_item(
            step_data, context, merged, item.key if partition_mode else None
        )

    return context_for


def _env_fn(
    context: Any,
    base_env: Mapping[str, str],
    request: JobRequest,
    partition_mode: bool,
):
    def env_for(i: int, item: TaskItem, tdir: str) -> dict[str, str]:
        env = {**base_env, **request.extra_env, **item.env}
        env.update(
            {
                "DAGSTER_HPC_RUN_ID": context.run.run_id,
                "DAGSTER_HPC_RUN_DIR": tdir,
                "DAGSTER_HPC_ITEM_KEY": item.key,
                "DAGSTER_HPC_ITEM_INDEX": str(i),
            }
        )
        if partition_mode:
            env["DAGSTER_HPC_PARTITION_KEY"] = item.key
        return env

    return env_for


def step_name(context: Any) -> str:
    op_context = getattr(context, "op_execution_context", context)
    return op_context.op.name


# ----------------------------------------------------------------------------------- Slurm


@cancellation.cooperative_step  # run termination under the concurrent executor (hpc_executor)
@step_calls.numbered_call  # its own launch record, apart from the step's other calls
def run_array_slurm(
    context: Any,
    backend: Any,  # SlurmBackend, prepared
    request: JobRequest,
    items: Sequence[TaskItem],
    *,
    partition_mode: bool,
    base_env: Mapping[str, str],
    extras: Mapping[str, Any],
    throttle: int | None,
    max_array_size: int,
    queue: Any,
    python: str,
    remove_if_succeeded: bool = False,
) -> MultiTaskOutcome:
    """``remove_if_succeeded``: the retention policy removes a successful step's run dir; when
    every task exited 0 that removal rides on the final sacct's first round trip."""
    check_throttle(throttle)
    transport = backend.transport
    step = step_name(context)
    log = context.log
    prior = _prior_array(context, backend)
    channels = [TaskChannel(i, it.key, "") for i, it in enumerate(items)]
    reused: set[int] = set()
    live_ids: list[str] = []
    previous: list[tuple[str, list[int]]] = []
    if prior is not None:
        run_dir = prior.run_dir
        rows = _our_jobs(transport, run_dir)  # after any submission still running there
        previous, exit_codes = _read_previous(transport, run_dir, len(items))
        previous += _adopt_unrecorded(transport, run_dir, rows, previous, log)
        known = {jid for jid, _ in previous}
        live = {jid for jid, state, _ in rows if jid in known and not slurm_state(state).finished}
        running = {t for jid, tasks in previous if jid in live for t in tasks}
        reused = {i for i, code in exit_codes.items() if code == 0}
        waiting = {i for i in running if exit_codes.get(i) is None}
        live_ids = [jid for jid, _ in previous if jid in live]
        to_run = [i for i in range(len(items)) if i not in reused and i not in waiting]
        log.info(
            f"dagster-hpc: reattached to the array in {run_dir}: {len(reused)} items succeeded "
            f"earlier (kept), {len(waiting)} still queued/running (waited for), {len(to_run)} to run again"
            + (f": {', '.join(items[i].key for i in to_run[:20])}" if to_run else "")
        )
    else:
        run_dir = backend.run_dir_for(context.run.run_id, step)
        to_run = list(range(len(items)))
    for ch in channels:
        ch.dir = task_dir(run_dir, ch.index)
        ch.__post_init__()

    new_ids: list[str] = []
    scripts: list[tuple[str, list[int]]] = []  # (chunk script, task indices) submitted now
    submissions = 0
    if to_run:
        attempt = uuid.uuid4().hex[:6]
        staging = Path(tempfile.mkdtemp(prefix="dagster-hpc-array-"))
        try:
            write_multitask_dir(
                staging,
                run_dir,
                request,
                python=python,
                items=items,
                indices=to_run,
                env_for=_env_fn(context, base_env, request, partition_mode),
                context_for=_context_data_fn(context, extras, partition_mode),
            )
            for n, tasks in enumerate(chunks(to_run, max_array_size)):
                name = ARRAY_SCRIPT.format(attempt=attempt, chunk=n)
                text = render_array_script(
                    run_dir=run_dir, tasks=tasks, queue=queue, step=step, throttle=throttle
                )
                (staging / name).write_text(text)
                (staging / name).chmod(0o700)
                scripts.append((name, tasks))
            data = _shell.tar_directory(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        q = shlex.quote(run_dir)
        # a rerun keeps the earlier attempt's files of each task next to it (t/<i>.<attempt>)
        move_old = " ".join(str(i) for i in to_run) if prior is not None else ""
        prelude = (
            f"umask 077 && mkdir -p {q} && cd {q} && mkdir -p t && "
            f"for i in {move_old}; do [ -e t/$i ] && mv t/$i t/$i.before-{attempt}; done; "
            if move_old
            else ""
        )
        cmd = (
            prelude
            + _shell.untar_command(run_dir, 0o700)
            + " && "
            + submit_command(run_dir, scripts)
        )
        # recorded BEFORE the sbatch calls: a retry after a dropped connection finds this run
        # dir (its arrays.txt, the jobs submitted from its scripts) instead of a fresh one
        _record(context, backend, run_dir, previous_ids=[j for j, _ in previous])
        try:
            res = transport.run(cmd, timeout=ARRAY_SUBMIT_TIMEOUT_S, stdin=data)
        except TransportError as exc:
            raise TransportError(
                f"submitting the array in {run_dir} on {backend.cluster} was interrupted: some "
                f"chunks may have been submitted. Their ids are in {run_dir}/{ARRAYS_FILE}; "
                f"re-executing the run reattaches to them (nothing is submitted twice).\n{exc}"
            ) from exc
        new_ids = [line.strip() for line in res.stdout.splitlines() if line.strip().isdigit()]
        submissions = len(new_ids)
        if not res.ok or len(new_ids) != len(scripts):
            if new_ids:
                _record(context, backend, run_dir, previous_ids=[j for j, _ in previous] + new_ids)
            raise RemoteCommandError(
                f"sbatch of array chunks in {run_dir}",
                res.exit_code,
                res.stdout,
                res.stderr,
                hint=f"Slurm accepted {len(new_ids)} of {len(scripts)} array chunks; read its message above "
                "(partition, account, QOS, MaxArraySize or MaxSubmitJobs limits)",
            )
        log.info(
            f"dagster-hpc: submitted {len(to_run)} items as {len(new_ids)} array job(s) "
            f"{', '.join(new_ids)} (MaxArraySize {max_array_size}"
            + (f", at most {throttle} at once" if throttle else "")
            + f"; run dir {run_dir})"
        )
    all_ids = [jid for jid, _ in previous] + new_ids
    _record(context, backend, run_dir, previous_ids=all_ids)
    watch_ids = live_ids + new_ids
    # what arrays.txt holds now (read at reattach + appended by the submission): no read back
    task_ids = task_job_ids(previous + [(j, t) for j, (_, t) in zip(new_ids, scripts, strict=True)])
    early = _EarlyRecords(transport, channels, task_ids)

    # replayed channels (kept from an earlier attempt) are read for their metadata only
    reader = TaskReader(
        transport,
        [ch for ch in channels if ch.index not in reused],
        log=log,
        interval_s=ARRAY_TASK_TAIL_PENDING_S if watch_ids else SLURM_TASK_TAIL_S,
        idle_interval_s=SLURM_TASK_TAIL_IDLE_S,
        idle_after_s=SLURM_TASK_TAIL_IDLE_AFTER_S,
    )
    replay = TaskReader(
        transport, [ch for ch in channels if ch.index in reused], log=_NullLog(), interval_s=0.0
    )
    with reader:
        if reused:
            replay.start()
            replay.stop()
        try:
            _wait_slurm(transport, reader, watch_ids, early)
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            log.warning(
                f"dagster-hpc: run interrupted: cancelling array job(s) {', '.join(all_ids)}"
            )
            _scancel(transport, all_ids)
            raise
        reader.stop()
    succeeded = all(ch.exit_code == 0 for ch in channels)
    suffix, removed = backend.folded_removal(run_dir if remove_if_succeeded and succeeded else None)
    metrics = _sacct_tasks(
        transport,
        task_ids,
        list(range(len(items))),
        known=early.metrics,
        first_suffix=suffix,
        on_first=removed,
    )
    results = []
    for ch in channels:
        results.append(
            _result(
                ch,
                items[ch.index],
                run_dir,
                task_ids.get(ch.index, "?"),
                metrics.get(ch.index),
                reused=ch.index in reused,
            )
        )
    return MultiTaskOutcome("array", run_dir, results, submissions, all_ids)


def _prior_array(context: Any, backend: Any) -> JobHandle | None:
    if not getattr(backend, "reattach", True):
        return None
    from dagster_hpc._dagster_adapter import latest_launch

    try:
        handle = latest_launch(context)
    except Exception:  # noqa: BLE001 - no usable record means: launch fresh
        return None
    if handle is None or handle.backend != ARRAY_BACKEND or handle.cluster != backend.cluster:
        return None
    return handle


def _record(context: Any, backend: Any, run_dir: str, *, previous_ids: list[str]) -> None:
    from dagster_hpc._dagster_adapter import record_launch

    record_launch(
        context,
        JobHandle(
            backend=ARRAY_BACKEND,
            job_id=",".join(previous_ids),
            run_dir=run_dir,
            cluster=backend.cluster,
        ),
    )


def _read_previous(
    transport: Any, run_dir: str, n: int
) -> tuple[list[tuple[str, list[int]]], dict[int, int | None]]:
    paths = [(f"{run_dir}/{ARRAYS_FILE}", 0)] + [
        (f"{task_dir(run_dir, i)}/{EXIT_CODE}", 0) for i in range(n)
    ]
    chunks_ = transport.read_many_from(paths, max_bytes=1 << 20)
    arrays = parse_arrays_file(chunks_[0].decode(errors="replace"))
    codes: dict[int, int | None] = {}
    for i, raw in enumerate(chunks_[1:]):
        text = raw.decode(errors="replace").strip()
        codes[i] = int(text) if text.lstrip("-").isdigit() else None
    return arrays, codes


def _our_jobs(transport: Any, run_dir: str) -> list[tuple[str, str, str]]:
    """``(array job id, state, command)`` of all our jobs, asked once the run dir's submit lock
    is free (a submission that lost its connection may still be queueing chunks). When squeue
    cannot be asked nothing is guessed: SubmissionError, nothing submitted."""
    q = shlex.quote(run_dir)
    cmd = (
        f"{{ [ ! -d {q} ] || {{ cd {q} && flock -w {SUBMIT_LOCK_WAIT_S} {SUBMIT_LOCK} true; }}; }} "
        "&& squeue --me --noheader --states=all --format='%F|%T|%o'"
    )
    try:
        res = transport.run(cmd, timeout=ARRAY_QUERY_TIMEOUT_S + SUBMIT_LOCK_WAIT_S)
    except TransportError as exc:
        res = CommandResult(255, "", str(exc))
    if not res.ok:
        raise SubmissionError(
            f"cannot tell which array chunks of {run_dir} an earlier attempt submitted: the "
            f"check failed ({res.stderr.strip()[-300:]}). Nothing was submitted (a second array "
            "would run its items twice); retry when squeue works on the login node."
        )
    rows = []
    for line in res.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def _adopt_unrecorded(
    transport: Any,
    run_dir: str,
    rows: Sequence[tuple[str, str, str]],
    previous: Sequence[tuple[str, list[int]]],
    log: Any,
) -> list[tuple[str, list[int]]]:
    """Chunks submitted from this run dir that arrays.txt misses (their sbatch answered, the
    connection dropped before the line was written): read their task lists from their
    scripts, append them to arrays.txt, and return them (they are waited for, not resubmitted)."""
    found = unrecorded_chunks(rows, run_dir, {jid for jid, _ in previous})
    if not found:
        return []
    texts = transport.read_many_from([(path, 0) for path in found.values()], max_bytes=1 << 20)
    adopted: list[tuple[str, list[int]]] = []
    for (jid, path), raw in zip(found.items(), texts, strict=True):
        tasks = script_tasks(raw.decode(errors="replace"))
        if tasks is None:
            raise SubmissionError(
                f"array job {jid} was submitted from {path}, which lists no tasks: cannot tell "
                "which items it runs. Nothing was submitted; cancel it or restore the script."
            )
        adopted.append((jid, tasks))
    lines = "".join(
        f"{jid} {path.rsplit('/', 1)[-1]} {' '.join(map(str, tasks))}\n"
        for (jid, tasks), path in zip(adopted, found.values(), strict=True)
    )
    transport.check(
        f"printf %s {shlex.quote(lines)} >> {shlex.quote(run_dir + '/' + ARRAYS_FILE)}",
        timeout=ARRAY_QUERY_TIMEOUT_S,
    )
    log.warning(
        f"dagster-hpc: array job(s) {', '.join(found)} were submitted from {run_dir} by an "
        "earlier attempt whose connection dropped before it recorded them: waited for, not "
        "submitted again"
    )
    return adopted


def _live_jobs(transport: Any, job_ids: Sequence[str]) -> set[str]:
    """Array job ids of ``job_ids`` with any task still pending/running."""
    return _queue_states(transport, job_ids)[0]


def _queue_states(transport: Any, job_ids: Sequence[str]) -> tuple[set[str], bool]:
    """(array job ids of ``job_ids`` with any task still pending/running, whether any task is
    still PENDING), from one squeue."""
    if not job_ids:
        return set(), False
    ids = ",".join(job_ids)
    res = transport.run(
        f"squeue --noheader --jobs={shlex.quote(ids)} --states=all --format='%F|%T'",
        timeout=ARRAY_QUERY_TIMEOUT_S,
    )
    if not res.ok and "Invalid job id" in res.stderr:
        return set(), False  # every job is gone from slurmctld's memory: none is live
    if not res.ok:
        # cannot know: treat all as live (never rerun a task that may still be running)
        return set(job_ids), True
    live, pending = set(), False
    for line in res.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and not slurm_state(state).finished:
            live.add(jid)
            pending = pending or state.strip().upper().startswith("PENDING")
    return live, pending


class _EarlyRecords:
    """The final sacct records of tasks that ended while others still run (``collect_final``,
    at most every ARRAY_EARLY_SACCT_INTERVAL_S): the final settle skips them."""

    def __init__(
        self, transport: Any, channels: Sequence[TaskChannel], task_ids: Mapping[int, str]
    ):
        self._transport = transport
        self._channels = channels
        self._task_ids = task_ids
        self.metrics: dict[str, Any] = {}
        self._next = time.monotonic() + ARRAY_EARLY_SACCT_INTERVAL_S
        self._useful = True  # False once sacct says accounting is off or unreachable
        self.rounds = 0

    def poll(self, now: float) -> None:
        if not self._useful or now < self._next:
            return
        self._next = now + ARRAY_EARLY_SACCT_INTERVAL_S
        ended = [
            self._task_ids[ch.index]
            for ch in self._channels
            if ch.exit_code is not None
            and ch.index in self._task_ids
            and self._task_ids[ch.index] not in self.metrics
        ]
        if ended:
            self.rounds += 1
            ended = ended[:SACCT_BY_TASK_MAX]
            self._useful = collect_final(self._transport, ended, self.metrics)


def _wait_slurm(
    transport: Any, reader: TaskReader, watch_ids: list[str], early: _EarlyRecords | None = None
) -> None:
    gone_at: float | None = None
    next_poll = 0.0
    while True:
        cancellation.check_current()  # a stop request of the concurrent executor: scancel below
        if reader.error is not None:
            return
        if reader.all_exited():
            return
        now = time.monotonic()
        if early is not None:
            early.poll(now)
        if now >= next_poll and watch_ids:
            next_poll = now + ARRAY_POLL_INTERVAL_S
            try:
                live, pending = _queue_states(transport, watch_ids)
            except TransportError:
                live, pending = set(watch_ids), True
            reader.set_interval(ARRAY_TASK_TAIL_PENDING_S if pending else SLURM_TASK_TAIL_S)
            if not live:
                gone_at = gone_at or now
            else:
                gone_at = None
        if not watch_ids:
            gone_at = gone_at or now
        if gone_at is not None and now - gone_at > ARRAY_EXIT_FILE_GRACE_S:
            return
        reader.changed.wait(0.5)
        reader.changed.clear()


def _scancel(transport: Any, job_ids: Sequence[str]) -> None:
    if job_ids:
        transport.run(
            "scancel " + " ".join(shlex.quote(j) for j in job_ids), timeout=ARRAY_QUERY_TIMEOUT_S
        )


def task_job_ids(arrays: Sequence[tuple[str, Sequence[int]]]) -> dict[int, str]:
    """Task index -> "<array job id>_<array index>" of its latest submission, from ARRAYS_FILE's
    ``(job id, task indices)`` pairs in submission order."""
    out: dict[int, str] = {}
    for jid, tasks in arrays:
        for j, t in enumerate(tasks):
            out[t] = f"{jid}_{j}"
    return out


def _sacct_tasks(
    transport: Any,
    task_ids: Mapping[int, str],
    wanted: Sequence[int],
    *,
    known: Mapping[str, Any] | None = None,
    first_suffix: str = "",
    on_first: Callable[[str], None] | None = None,
) -> dict[int, Any]:
    """One settle (``slurm_sacct.settle``) over the tasks without a final record yet (``known``:
    the ones gathered while the array ran): task index -> JobMetrics. Few missing tasks are
    asked by task id (``<array>_<i>``, a small answer), many by array job id.
    ``first_suffix`` / ``on_first``: the folded run-dir removal (``folded_removal``)."""
    tasks = {i: task_ids[i] for i in wanted if i in task_ids}
    if not tasks:
        return {}  # nothing to ask (retention then removes the run dir itself)
    missing = [tid for tid in tasks.values() if tid not in (known or {})]
    by_task = len(missing) <= SACCT_BY_TASK_MAX
    query = None if by_task else sorted({tid.split("_")[0] for tid in missing})
    got = settle(
        transport,
        query,
        list(tasks.values()),
        known=known,
        first_suffix=first_suffix,
        on_first=on_first,
    ).metrics
    return {i: got[tid] for i, tid in tasks.items() if tid in got}


def _result(
    ch: TaskChannel, item: TaskItem, run_dir: str, job_id: str, metrics: Any, *, reused: bool
) -> TaskResult:
    from dagster_hpc._dagster_adapter import metadata_from_pipes

    md: dict[str, Any] = {}
    for mat in ch.materializations:
        md.update(metadata_from_pipes(mat.get("metadata")))
    if metrics is not None:
        md.update(metrics.to_metadata())
    if ch.exit_code == 0:
        state = JobState.COMPLETED.value
    elif (
        metrics is not None
        and slurm_state(metrics.state).finished
        and slurm_state(metrics.state) is not JobState.COMPLETED
    ):
        state = slurm_state(metrics.state).value
    elif ch.exit_code is None:
        state = JobState.CANCELLED.value if metrics is None else slurm_state(metrics.state).value
    else:
        state = JobState.FAILED.value
    md["slurm/state" if job_id != "local" else "dagster-hpc/state"] = state
    md["dagster-hpc/item_key"] = item.key
    return TaskResult(
        index=ch.index,
        key=item.key,
        extras=dict(item.extras),
        exit_code=ch.exit_code,
        state=state,
        job_id=job_id,
        run_dir=ch.dir,
        metadata=md,
        checks=list(ch.checks),
        stderr_tail=list(ch.stderr_tail),
        exception=ch.exception,
        reused=reused,
    )


# ----------------------------------------------------------------------------------- local


def run_array_local(
    context: Any,
    backend: Any,  # LocalBackend
    request: JobRequest,
    items: Sequence[TaskItem],
    *,
    partition_mode: bool,
    base_env: Mapping[str, str],
    extras: Mapping[str, Any],
    throttle: int | None,
    python: str,
) -> MultiTaskOutcome:
    """The same run dir and wrappers as on Slurm, run by a pool of at most ``throttle`` (default:
    the CPU count) local processes: what passes here passes as an array on the cluster."""
    import os

    check_throttle(throttle)
    run_dir = backend.run_dir_for(context.run.run_id, step_name(context))
    Path(run_dir).mkdir(parents=True, mode=0o700)
    write_multitask_dir(
        Path(run_dir),
        run_dir,
        request,
        python=python,
        items=items,
        indices=range(len(items)),
        env_for=_env_fn(context, base_env, request, partition_mode),
        context_for=_context_data_fn(context, extras, partition_mode),
    )
    channels = [TaskChannel(i, it.key, task_dir(run_dir, i)) for i, it in enumerate(items)]
    width = throttle or os.cpu_count() or 1
    pending = list(range(len(items)))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    reader = TaskReader(backend.transport, channels, log=context.log, interval_s=LOCAL_TASK_TAIL_S)
    with reader:
        try:
            while pending or procs:
                while pending and len(procs) < width:
                    i = pending.pop(0)
                    procs[i] = subprocess.Popen(
                        ["bash", f"{task_dir(run_dir, i)}/job.sh"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                for i, p in list(procs.items()):
                    if p.poll() is not None:
                        del procs[i]
                time.sleep(LOCAL_POOL_TICK_S)
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            context.log.warning(
                "dagster-hpc: run interrupted: stopping the array's local processes"
            )
            _kill_local(procs.values())
            raise
        reader.stop()
    results = [
        _result(ch, items[ch.index], run_dir, "local", None, reused=False) for ch in channels
    ]
    return MultiTaskOutcome("array", run_dir, results, 0, [])


def _kill_local(procs: Any) -> None:
    import os

    procs = list(procs)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + LOCAL_CANCEL_GRACE_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def raise_for(outcome: MultiTaskOutcome) -> None:
    err = outcome.error()
    if err is not None:
        raise err


__all__ = ["PayloadError", "raise_for", "run_array_local", "run_array_slurm"]
