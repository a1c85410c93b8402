"""Slurm's final accounting record of ended jobs: ONE bounded settle loop for single jobs, array
tasks and hetjob components.

slurmctld hands a job's records to slurmdbd asynchronously. For a short job the step record
often arrives first, and slurmdbd then shows a stand-in job row (named ``allocation``, no
partition) until the job's own start record replaces it, which takes up to ~5 s on a quiet test
cluster (measured: the stand-in is COMPLETED 0.2-0.5 s after the job's end, the job's own record
1-5 s later). Waiting for it cost every short asset seconds.

A stand-in row is taken as final when it is *complete*: the job's state is terminal, its
allocation (AllocTRES, NodeList, ExitCode, ElapsedRaw) is recorded and every step row is
terminal, i.e. the step usage slurmdbd has is already final. The one field it never has, the
partition, comes from slurmctld (``squeue --states=all`` still lists a job for MinJobAge after its
end) in the same round trip; without it the stand-in is not complete. Numbers are never taken
from a RUNNING/PENDING record (a stand-in is PENDING before it is COMPLETED).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dagster_hpc import sh
from dagster_hpc.backends.slurm_poller import slurm_state
from dagster_hpc.errors import TransportError
from dagster_hpc.metrics import (
    SACCT_FIELDS,
    SACCT_FIELDS_NO_TRES,
    JobMetrics,
    accounting_disabled,
    accounting_unreachable,
    parse_sacct,
    parse_tres,
    sacct_command,
)
from dagster_hpc.transport.base import Transport

# The whole wait for final records, per settle (one job, one array's tasks, one hetjob): past
# it we report what sacct has (a RUNNING record's numbers are then left out by the caller's
# state check). Measured: a complete record is there 0.2-0.5 s after the end on a quiet
# cluster; slurmdbd's own record of a short job up to ~5 s, so 10 s covers a busy slurmdbd.
SACCT_SETTLE_BUDGET_S = 10.0
# The first re-query comes soon (this wait is on the critical path of every asset), then the
# pause doubles up to the interval.
SACCT_SETTLE_FIRST_S = 0.05
SACCT_SETTLE_INTERVAL_S = 0.3
# One sacct on a loaded slurmdbd can take many seconds.
SACCT_TIMEOUT_S = 60.0
# Marks slurmctld's partition lines in the combined answer (never a sacct row: 3 fields).
PARTITION_MARK = "dagster-hpc-partition"
STAND_IN_NAME = "allocation"
# Marks slurmctld's line in a final record's answer: "MARK|job|state|partition|tres|".
ENDED_MARK = "dagster-hpc-ended"
# A single job's final record first waits on the login node for slurmctld to list the job as
# ended (squeue after each pause: at most ~1.3 s and 8 calls of a few ms; slurmctld shows the end
# 10-20 ms after the job's last instruction), then asks sacct again after each pause of
# FINAL_SACCT_PAUSES_S while a row is not terminal (slurmdbd lags slurmctld by 0.1-0.2 s).
FINAL_SQUEUE_PAUSES_S = (0.0, 0.02, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
FINAL_SACCT_PAUSES_S = (0.1, 0.2)
SACCT_START_TIME = "now-7days"


def settle_command(query_ids: Sequence[str]) -> str:
    """sacct for ``query_ids``; when a stand-in row is among the answer, slurmctld's partition
    of each job in the same round trip (one ``squeue``, ~15 ms, only then)."""
    jobs = shlex.quote(",".join(query_ids))
    return (
        f"r=$({sacct_command(','.join(query_ids))}); printf '%s\\n' \"$r\"; "
        f"case $r in *'|{STAND_IN_NAME}|'*) squeue --noheader --states=all --jobs {jobs} "
        f"--format='{PARTITION_MARK}|%i|%P' 2>/dev/null;; esac"
    )


def final_record_command(job_id: str) -> str:
    """ONE round trip for a single job's final record (see the module docstring)."""
    return sh.command(
        "final_record.sh",
        shlex.quote(job_id),
        shlex.quote(",".join(SACCT_FIELDS_NO_TRES)),
        shlex.quote(",".join(SACCT_FIELDS)),
        shlex.quote(SACCT_START_TIME),
        shlex.quote(" ".join(f"{p:g}" for p in FINAL_SQUEUE_PAUSES_S)),
        shlex.quote(" ".join(f"{p:g}" for p in FINAL_SACCT_PAUSES_S)),
        shlex.quote(ENDED_MARK),
    )


@dataclass(frozen=True)
class Slurmctld:
    """What slurmctld said in the same round trip: partitions, and (final_record.sh only) the
    allocated TRES of jobs whose sacct rows were asked for without AllocTRES."""

    partitions: dict[str, str] = field(default_factory=dict)
    tres: dict[str, str] = field(default_factory=dict)

    def fields(self, job_id: str) -> tuple[str, ...]:
        return SACCT_FIELDS_NO_TRES if job_id in self.tres else SACCT_FIELDS


def split_partitions(text: str) -> tuple[str, Slurmctld]:
    """(sacct's text, slurmctld's partitions and TRES from the marked lines)."""
    rows, ctld = [], Slurmctld()
    for line in text.splitlines():
        mark, _, rest = line.partition("|")
        if mark == PARTITION_MARK:
            jid, _, part = rest.partition("|")
            if jid and part:
                ctld.partitions[jid] = part
        elif mark == ENDED_MARK:
            jid, _state, part, tres, *_ = [*rest.split("|"), "", "", "", ""]
            if jid:
                ctld.tres[jid] = tres
                if part:
                    ctld.partitions[jid] = part
        else:
            rows.append(line)
    return "\n".join(rows) + ("\n" if rows else ""), ctld


def complete_stand_in(m: JobMetrics) -> bool:
    """A stand-in row whose numbers are already final (see the module docstring)."""
    return bool(
        slurm_state(m.state).finished
        and m.exit_code is not None
        and m.elapsed_s is not None
        and m.alloc_tres
        and m.node_list
        and m.node_list != "None assigned"
        and m.step_states
        and all(slurm_state(s).finished for s in m.step_states.values())
    )


def with_ctld_tres(m: JobMetrics, ctld: Slurmctld) -> JobMetrics:
    """``m`` with slurmctld's allocated TRES when sacct was asked without AllocTRES; only for a
    job that got nodes (for a job that never started, squeue shows the requested TRES)."""
    tres = ctld.tres.get(m.job_id)
    if m.alloc_tres or not tres or not m.node_list or m.node_list == "None assigned":
        return m
    return replace(m, alloc_tres=parse_tres(tres))


def final(m: JobMetrics | None, ctld: Slurmctld) -> JobMetrics | None:
    """``m`` when it is Slurm's final record, a complete stand-in with slurmctld's partition
    filled in, or None (ask again)."""
    if m is None or not slurm_state(m.state).finished:
        return None
    m = with_ctld_tres(m, ctld)
    if m.from_job_record:
        return m
    part = ctld.partitions.get(m.job_id)
    if part and complete_stand_in(m):
        return replace(m, partition=part)
    return None


@dataclass
class Settled:
    """What the settle loop saw last: sacct's text (for the "why no numbers" checks) and the
    records per wanted id (final ones, or the last non-final ones when the budget ran out)."""

    text: str
    metrics: dict[str, JobMetrics] = field(default_factory=dict)
    rounds: int = 0

    @property
    def unreachable_or_disabled(self) -> bool:
        return accounting_disabled(self.text) or bool(accounting_unreachable(self.text))


def collect_final(transport: Transport, ids: Sequence[str], into: dict[str, JobMetrics]) -> bool:
    """ONE sacct round trip over ``ids`` (jobs or array tasks whose exit_code file says they
    ended, while others of the same step still run): each id's FINAL record goes into ``into``;
    a RUNNING, PENDING or incomplete record is left for the final ``settle``. The final settle
    then waits only for the records of the last tasks, not for all of them. Returns False when
    asking again cannot help (accounting disabled or slurmdbd unreachable)."""
    try:
        res = transport.run(settle_command(ids), timeout=SACCT_TIMEOUT_S)
    except TransportError:
        return True  # the final settle asks again; nothing is taken from a failed read
    text, ctld = split_partitions(res.stdout)
    text += res.stderr
    if accounting_disabled(text) or accounting_unreachable(text):
        return False
    for wid in ids:
        f = final(parse_sacct(text, wid), ctld)
        if f is not None:
            into[wid] = f
    return True


def settle(
    transport: Transport,
    query_ids: Sequence[str] | None,
    wanted: Sequence[str],
    *,
    known: Mapping[str, JobMetrics] | None = None,
    first_command: str | None = None,
    first_suffix: str = "",
    on_first: Callable[[str], None] | None = None,
    budget_s: float = SACCT_SETTLE_BUDGET_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """sacct ``query_ids`` (job ids, array or hetjob ids) until every id in ``wanted`` (a job,
    ``<array>_<i>`` or ``<het>+<i>``) has a final record, bounded by ``budget_s``. With
    ``query_ids=None`` each round asks for the wanted ids still without a final record only
    (sacct takes ``<array>_<i>``): a small answer once most tasks are known.

    A failing sacct is not an error (the caller's metadata then says the numbers are
    unavailable); an unreachable or disabled slurmdbd ends the wait at once. ``first_suffix`` is
    shell appended to the first round trip only (the run dir's removal); ``on_first`` gets that
    round trip's raw stdout. ``known``: final records gathered earlier (``collect_final``),
    not asked again; when every wanted id is known there is no round trip at all.
    ``first_command``: the first round trip's query instead of ``settle_command`` (a single
    job's ``final_record_command``).
    """
    deadline = clock() + budget_s
    pause = SACCT_SETTLE_FIRST_S
    out = Settled("", metrics=dict(known or {}))
    missing = [wid for wid in wanted if wid not in out.metrics]
    suffix, first = first_suffix, first_command
    while missing:
        out.rounds += 1
        asked = missing if query_ids is None else query_ids
        try:
            res = transport.run((first or settle_command(asked)) + suffix, timeout=SACCT_TIMEOUT_S)
            if suffix and on_first is not None:
                on_first(res.stdout)
            text, ctld = split_partitions(res.stdout)
            out.text = text + res.stderr
        except TransportError as exc:
            out.text, ctld = str(exc), Slurmctld()
        suffix, first = "", None  # asked once: a failure is left to the caller's later attempt
        if out.unreachable_or_disabled:
            out.metrics = dict(known or {})  # the earlier final records stay true
            return out
        still = []
        for wid in missing:
            m = parse_sacct(out.text, wid, ctld.fields(wid))
            f = final(m, ctld)
            if f is not None:
                out.metrics[wid] = f
            else:
                still.append(wid)
                if m is not None:
                    out.metrics[wid] = m  # kept in case the budget runs out
        missing = still
        if not missing or clock() >= deadline:
            return out
        sleep(pause)
        pause = min(pause * 2, SACCT_SETTLE_INTERVAL_S)
    return out
