"""The reconcile sensor: no Slurm job keeps burning node-hours after Dagster lost track of it.

A step that dies with its process (OOM-killed run worker, a redeploy, a lost node) leaves its
Slurm job running; a retry would reattach to it, but if none comes, nothing would ever stop
it. Each tick the sensor:

1. lists the local launch records of this Dagster instance (``launch_records``): a directory
   listing, no SSH round trip and no scheduler query. While nothing is in flight it ends here;
2. keeps only records whose Dagster run is finished (success, failure, canceled) or gone
   (deleted), for longer than ``grace_s`` and without a retry of it still in progress (a retry
   reattaches to the job and re-records it under its own run);
3. for those, reads ONE ``squeue`` answer through the machine-wide shared poll cache (free when
   steps are polling anyway); a job still pending or running gets ``scancel``, a job that has
   ended loses its record. A failed query changes nothing (never cancel on "unknown").

What it did (run id, job id, why) goes to the sensor's log, an engine event on the Dagster run
and the audit log ``reconcile-log.jsonl`` beside the records.

Scheduler cost at the default interval: 0 queries per day while no run was abandoned; at most
one ``squeue`` (plus one ``scancel`` per abandoned job) per tick otherwise: at most
86400 / RECONCILE_INTERVAL_S = 1440 a day, and 0 extra when a step refreshed the cache
within its tick.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagster_hpc.backends.base import JobState
from dagster_hpc.backends.slurm_poller import SACCT_FALLBACK_AFTER_S, SlurmPoller, slurm_state
from dagster_hpc.errors import TransportError
from dagster_hpc.kinds import resolve_mode
from dagster_hpc.launch_records import LaunchRecord, LaunchRecords
from dagster_hpc.transport.base import Transport

# Default tick: a job of an abandoned run stops within about a minute (plus grace), and the
# worst case of one squeue per tick stays at 1/minute, under the 4/minute some sites enforce.
RECONCILE_INTERVAL_S = 60
# How long after a run ended its jobs are left alone: Dagster's run-retry daemon launches a
# retry within seconds to a minute, and that retry reattaches to the job instead of paying for
# it twice. Two minutes of a job's node time is the price of not killing work a retry adopts.
RECONCILE_GRACE_S = 120.0
# scancel answers at once (the kill itself is asynchronous; the next tick confirms it).
SCANCEL_TIMEOUT_S = 60.0
# A job told to stop takes KillWait (30 s by default) plus epilogs to leave squeue; scancel is
# sent again only if it is still pending/running this long after (a lost signal, a busy node).
CANCEL_RESEND_S = 300.0
# Dagster's tag linking a retry / re-execution to the run it retries.
PARENT_RUN_TAG = "dagster/parent_run_id"
SENSOR_NAME = "dagster_hpc_reconcile"


@dataclass(frozen=True)
class ReconcileAction:
    run_id: str
    job_id: str
    cluster: str
    action: str  # "cancelled", "cancel-confirmed", "forgotten", "cancel-failed"
    why: str


def abandoned_reason(
    instance: dg.DagsterInstance, record: LaunchRecord, *, now: float, grace_s: float
) -> str | None:
    """Why the job of ``record`` has nobody waiting for it, or None if its run may still use it."""
    run = instance.get_run_by_id(record.run_id)
    if run is None:
        return f"run {record.run_id} no longer exists in this Dagster instance"
    if not run.is_finished:
        return None
    run_record = instance.get_run_record_by_id(record.run_id)
    ended = None
    if run_record is not None:  # end_time comes with the run's end event; else its last update
        ended = run_record.end_time or run_record.update_timestamp.timestamp()
    if ended is not None and now - ended < grace_s:
        return None  # a retry may still come and reattach
    retries = instance.get_runs(filters=dg.RunsFilter(tags={PARENT_RUN_TAG: record.run_id}))
    if any(not r.is_finished for r in retries):
        return None  # the retry in progress adopts (or replaces) the job
    return f"run {record.run_id} is {run.status.value} (step {record.step or '?'})"


def reconcile(
    instance: dg.DagsterInstance,
    records: LaunchRecords,
    *,
    cluster: str,
    transport: Callable[[], Transport],
    grace_s: float = RECONCILE_GRACE_S,
    now: Callable[[], float] = time.time,
    poller: Callable[[Transport], SlurmPoller] | None = None,
) -> list[ReconcileAction]:
    """One tick. ``transport`` is only called (and the scheduler only asked) when a record
    belongs to a finished or gone run."""
    t = now()
    candidates = []
    for record in records:
        if record.cluster != cluster:
            continue  # another cluster's job: its own sensor/resource judges it
        why = record.cancel_reason if record.cancel_sent_at else None
        why = why or abandoned_reason(instance, record, now=t, grace_s=grace_s)
        if why:
            candidates.append((record, why))
    if not candidates:
        return []
    conn = transport()
    snap = (poller or (lambda tr: SlurmPoller(tr, cluster)))(conn).snapshot()
    if snap is None or not snap.ok:
        return []  # unknown: never cancel, never forget; next tick asks again
    actions = []
    for record, why in candidates:
        row = snap.jobs.get(record.job_id)
        if row is None:
            if snap.fetched_at - record.submitted_at < SACCT_FALLBACK_AFTER_S:
                continue  # the answer predates the job: wait for a newer one
            state = JobState.COMPLETED  # left squeue long ago: not running
        else:
            state = slurm_state(row["state"])
        if state is JobState.UNKNOWN:
            continue
        if state.finished:
            records.remove(record.cluster, record.job_id)
            action = "cancel-confirmed" if record.cancel_sent_at else "forgotten"
            actions.append(ReconcileAction(record.run_id, record.job_id, cluster, action, why))
            continue
        if record.cancel_sent_at and t - record.cancel_sent_at < CANCEL_RESEND_S:
            continue  # scancel is on its way: the next ticks confirm it
        actions.append(_cancel(conn, records, record, why))
    return actions


def _cancel(
    conn: Transport, records: LaunchRecords, record: LaunchRecord, why: str
) -> ReconcileAction:
    try:
        res = conn.run(f"scancel {shlex.quote(record.job_id)}", timeout=SCANCEL_TIMEOUT_S)
        error = "" if res.ok else f"scancel exited {res.exit_code}: {res.stderr.strip()[-300:]}"
    except TransportError as exc:
        error = str(exc)
    if error:
        return ReconcileAction(record.run_id, record.job_id, record.cluster, "cancel-failed", error)
    records.write(dataclasses.replace(record, cancel_sent_at=time.time(), cancel_reason=why))
    return ReconcileAction(record.run_id, record.job_id, record.cluster, "cancelled", why)


def _describe(a: ReconcileAction) -> str:
    verbs = {
        "cancelled": "cancelled Slurm job",
        "cancel-confirmed": "Slurm confirmed the end of cancelled job",
        "forgotten": "stopped watching ended Slurm job",
        "cancel-failed": "could not cancel Slurm job",
    }
    return f"dagster-hpc reconcile: {verbs[a.action]} {a.job_id} on {a.cluster} of run {a.run_id}: {a.why}"


def _report(instance: dg.DagsterInstance, records: LaunchRecords, actions: list[Any]) -> None:
    from dagster_hpc._dagster_adapter import report_run_event

    for a in actions:
        records.audit(**dataclasses.asdict(a))
        if a.action in ("cancelled", "cancel-failed"):
            report_run_event(instance, a.run_id, _describe(a))


def build_reconcile_sensor(
    *,
    name: str = SENSOR_NAME,
    compute_key: str = "compute",
    minimum_interval_seconds: int = RECONCILE_INTERVAL_S,
    grace_s: float = RECONCILE_GRACE_S,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The reconcile sensor for the ``ComputeResource`` under ``compute_key``:
    ``dg.Definitions(sensors=[build_reconcile_sensor()], resources={"compute": ...})``."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={compute_key},
        default_status=default_status,
        description="Cancels Slurm jobs of Dagster runs that finished, failed, were canceled or "
        "deleted (dagster-hpc). Costs nothing while no job is in flight.",
    )
    def _reconcile(context: dg.SensorEvaluationContext, **_resources: Any):
        # (direct invocation passes required resources as keyword arguments; they are read
        # from context.resources, which works in the daemon and in tests alike)
        actions = reconcile_tick(context.instance, getattr(context.resources, compute_key), grace_s)
        for a in actions:
            (context.log.warning if a.action == "cancel-failed" else context.log.info)(_describe(a))
        done = sum(a.action == "cancelled" for a in actions)
        return dg.SkipReason(f"{done} job(s) cancelled" if actions else "nothing abandoned")

    return _reconcile


def reconcile_tick(
    instance: dg.DagsterInstance,
    compute: Any,
    grace_s: float = RECONCILE_GRACE_S,
    *,
    transport: Transport | None = None,
) -> list[ReconcileAction]:
    """What the sensor does per tick, for ``compute`` (a ComputeResource in slurm mode)."""
    records = LaunchRecords.for_instance(instance)
    if records is None or resolve_mode(compute) != "slurm":
        return []
    from dagster_hpc.compute import _slurm_settings

    slurm = _slurm_settings(compute)
    actions = reconcile(
        instance,
        records,
        cluster=slurm.cluster_label(),
        transport=(lambda: transport) if transport is not None else slurm.make_transport,
        grace_s=grace_s,
    )
    _report(instance, records, actions)
    return actions
