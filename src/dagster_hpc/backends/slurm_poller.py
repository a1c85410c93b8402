"""One scheduler query per tick for ALL Slurm jobs of ALL Dagster processes on this machine.

Dagster's multiprocess executor runs every step in its own process; N steps each running their
own ``squeue`` would multiply the load on slurmctld (sites rate-limit RPCs) and, over OpenSSH,
the number of channels. Instead every process reads one small cache file per cluster:

- under a file lock, whoever finds the cache older than the current tick interval runs ONE
  ``squeue --me`` (all of the user's jobs, including those that just finished and are still
  within Slurm's MinJobAge) and writes the answer atomically; everyone else just reads it;
- the interval starts at ``POLL_FLOOR_S`` and backs off while nothing changes (and after
  errors) up to ``POLL_MAX_S``; any change resets it to the floor;
- a job that has left squeue is looked up once with ``sacct`` (fallback);
- a failed query (SSH hiccup, slurmctld busy) yields UNKNOWN for every job: never "finished",
  so no caller ever cancels or abandons a healthy job because of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from dagster_hpc.backends.base import JobState, JobStatus
from dagster_hpc.errors import TransportError
from dagster_hpc.transport.base import Transport

# Never query the scheduler more often than this, machine-wide: slurmctld serves every user of
# the site, and a 2 s tick is already below what a person watching the UI can notice (job
# completion itself is seen from the job's exit_code file, not from this poll).
POLL_FLOOR_S = 2.0
# Upper bound of the backoff while nothing changes (a long job in the queue): keeps the load at
# ~2 queries/minute, under the 4/minute some sites enforce, yet notices a start within 30 s.
POLL_MAX_S = 30.0
# Growth factor per unchanged (or failed) tick.
POLL_BACKOFF = 1.5
# A squeue that takes longer than this is treated as a transient failure (slurmctld overloaded).
SCHEDULER_QUERY_TIMEOUT_S = 30.0
# How long a process waits for another process's query before reading the (older) cache as is:
# a bit longer than one query may take.
LOCK_TIMEOUT_S = SCHEDULER_QUERY_TIMEOUT_S + 5.0
# A job missing from squeue this soon after submit is not looked up in sacct (not yet visible
# to every slurmctld thread on a busy site); it is UNKNOWN until then.
SACCT_FALLBACK_AFTER_S = 5.0

SQUEUE_FORMAT = "%i|%T|%r|%S"
SQUEUE_COMMAND = f"squeue --me --noheader --states=all --format={shlex.quote(SQUEUE_FORMAT)}"

# squeue/sacct state names -> our states. In-between states count as the closest live state.
_STATE_MAP: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "NODE_FAIL": JobState.NODE_FAIL,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "DEADLINE": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "PREEMPTED": JobState.PREEMPTED,
}
_SLUG_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def slurm_state(name: str) -> JobState:
    """Map a squeue/sacct state ("CANCELLED by 0", "COMPLETING") to a JobState."""
    word = name.strip().split(" ")[0].rstrip("+").upper()
    return _STATE_MAP.get(word, JobState.UNKNOWN)


def parse_squeue(text: str) -> dict[str, dict[str, str]]:
    """{job_id: {"state", "reason", "start"}} from ``SQUEUE_COMMAND`` output."""
    jobs: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        job_id, state, reason, start = parts
        jobs[job_id] = {
            "state": state,
            "reason": "" if reason in ("None", "(null)") else reason,
            "start": "" if start in ("N/A", "Unknown", "(null)") else start,
        }
    return jobs


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dagster-hpc"


@dataclass(frozen=True)
class Snapshot:
    fetched_at: float
    interval_s: float
    ok: bool
    error: str
    jobs: dict[str, dict[str, str]]
    seq: int = 0  # scheduler queries made for this cache so far, by all processes (observability)


class SlurmPoller:
    """Per-process view of the machine-wide shared squeue cache for one cluster."""

    def __init__(
        self,
        transport: Transport,
        cluster: str,
        *,
        cache_dir: Path | None = None,
        floor_s: float = POLL_FLOOR_S,
        max_s: float = POLL_MAX_S,
        clock: Callable[[], float] = time.time,
    ):
        if floor_s <= 0 or max_s < floor_s:
            raise ValueError(
                f"poll intervals must satisfy 0 < floor_s <= max_s, got {floor_s}, {max_s}"
            )
        self._transport = transport
        self._clock = clock
        self._floor, self._max = floor_s, max_s
        directory = cache_dir or default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        slug = _SLUG_RE.sub("_", cluster)[:120]
        self.cache_path = directory / f"poll-{slug}.json"
        self._lock = FileLock(str(self.cache_path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._sacct_final: dict[str, JobStatus] = {}  # finished jobs found by the fallback
        self.queries = 0  # scheduler queries made by THIS process (tests, benchmarks)

    # --- the shared cache -------------------------------------------------------------
    def _read(self) -> Snapshot | None:
        try:
            data = json.loads(self.cache_path.read_text())
            return Snapshot(
                fetched_at=float(data["fetched_at"]),
                interval_s=float(data["interval_s"]),
                ok=bool(data["ok"]),
                error=str(data.get("error", "")),
                jobs=dict(data["jobs"]),
                seq=int(data.get("seq", 0)),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: treat as absent, the next writer replaces it

    def _write(self, snap: Snapshot) -> None:
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(snap.__dict__))
        os.replace(tmp, self.cache_path)

    def _query(self, previous: Snapshot | None) -> Snapshot:
        self.queries += 1
        seq = (previous.seq if previous else 0) + 1
        now = self._clock()
        prev_interval = previous.interval_s if previous else self._floor
        try:
            result = self._transport.run(SQUEUE_COMMAND, timeout=SCHEDULER_QUERY_TIMEOUT_S)
        except (TransportError, TimeoutError, OSError) as exc:
            return Snapshot(
                now,
                min(self._max, prev_interval * POLL_BACKOFF),
                False,
                str(exc),
                previous.jobs if previous else {},
                seq,
            )
        if not result.ok:
            err = f"squeue exited {result.exit_code}: {result.stderr.strip()[-500:]}"
            return Snapshot(
                now,
                min(self._max, prev_interval * POLL_BACKOFF),
                False,
                err,
                previous.jobs if previous else {},
                seq,
            )
        jobs = parse_squeue(result.stdout)
        changed = previous is None or not previous.ok or previous.jobs != jobs
        interval = self._floor if changed else min(self._max, prev_interval * POLL_BACKOFF)
        return Snapshot(now, interval, True, "", jobs, seq)

    def snapshot(self) -> Snapshot | None:
        """The current shared answer, refreshing it first if its tick has passed."""
        snap = self._read()
        if snap is not None and self._clock() - snap.fetched_at < snap.interval_s:
            return snap
        try:
            with self._lock:
                snap = self._read()  # someone may have refreshed while we waited
                if snap is None or self._clock() - snap.fetched_at >= snap.interval_s:
                    snap = self._query(snap)
                    self._write(snap)
        except Timeout:
            return self._read()  # another process is stuck on a slow query: use what we have
        return snap

    def reset_interval(self) -> None:
        """A new job was just submitted: the next tick should come soon (back to the floor)."""
        try:
            with self._lock:
                snap = self._read()
                if snap is not None and snap.interval_s > self._floor:
                    self._write(dataclasses.replace(snap, interval_s=self._floor))
        except Timeout:
            return  # someone else holds the lock and is querying: the tick is coming anyway

    # --- per job ------------------------------------------------------------------------
    def status(self, job_id: str, *, submitted_at: float | None = None) -> JobStatus:
        """Status of one job. Transient failures give UNKNOWN, never a finished state."""
        if job_id in self._sacct_final:
            return self._sacct_final[job_id]
        snap = self.snapshot()
        if snap is None or not snap.ok:
            reason = snap.error if snap else "no scheduler answer yet"
            return JobStatus(JobState.UNKNOWN, reason=f"scheduler query failed: {reason}")
        row = snap.jobs.get(job_id)
        if row is not None:
            return JobStatus(
                slurm_state(row["state"]), reason=row["reason"], expected_start=row["start"]
            )
        if submitted_at is not None and self._clock() - submitted_at < SACCT_FALLBACK_AFTER_S:
            return JobStatus(JobState.UNKNOWN, reason="not in squeue yet")
        return self._sacct_status(job_id)

    def _sacct_status(self, job_id: str) -> JobStatus:
        cmd = (
            f"sacct --parsable2 --noheader -X --jobs {shlex.quote(job_id)} "
            "--starttime now-7days --format=JobID,State,ExitCode"
        )
        self.queries += 1
        try:
            result = self._transport.run(cmd, timeout=SCHEDULER_QUERY_TIMEOUT_S)
        except (TransportError, TimeoutError, OSError) as exc:
            return JobStatus(JobState.UNKNOWN, reason=f"sacct failed: {exc}")
        if not result.ok:
            return JobStatus(
                JobState.UNKNOWN,
                reason=f"sacct exited {result.exit_code}: {result.stderr.strip()[-300:]}",
            )
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] == job_id:
                state = slurm_state(parts[1])
                code = parts[2].split(":")[0]
                status = JobStatus(state, exit_code=int(code) if code.isdigit() else None)
                if state.finished:
                    self._sacct_final[job_id] = status
                return status
        return JobStatus(JobState.UNKNOWN, reason="job is in neither squeue nor sacct")


_shared_lock = threading.Lock()
_shared: dict[tuple[object, ...], SlurmPoller] = {}


def shared_poller(transport: Transport, cluster: str) -> SlurmPoller:
    """The process's one poller for ``cluster``: steps running on threads of one process (the
    concurrent executor) share its cache handle and its memo of jobs found finished in sacct.
    Keyed by the way to the cluster too (transport kind and target), never shared across forks."""
    target = getattr(transport, "target", None)
    key = (os.getpid(), cluster, type(transport), target, str(default_cache_dir()))
    with _shared_lock:
        poller = _shared.get(key)
        if poller is None:
            poller = _shared[key] = SlurmPoller(transport, cluster)
        return poller
