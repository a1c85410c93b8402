"""What a run cost: node-, CPU- and GPU-hours per asset and per run.

Every Slurm job's accounting lands in its assets' metadata (``slurm/node_hours``,
``slurm/cpu_hours``, ``slurm/gpu_hours``: allocated resources x elapsed time, what sites charge;
failed jobs' numbers are recorded as observations). Two ways to read them per run:

- run tags ``dagster-hpc/node_hours``, ``dagster-hpc/cpu_hours``, ``dagster-hpc/gpu_hours`` and
  ``dagster-hpc/slurm_jobs``, kept up to date by each step as its job ends (searchable and shown
  in the UI's run list);
- ``dagster-hpc cost RUN_ID``: per job and asset, from the run's event log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from dagster_hpc.backends.slurm_poller import default_cache_dir
from dagster_hpc.metrics import METADATA_PREFIX

RESOURCES = ("node_hours", "cpu_hours", "gpu_hours")
TAG_PREFIX = "dagster-hpc/"
JOBS_TAG = f"{TAG_PREFIX}slurm_jobs"
# Steps of a run update its tags from several processes (read-add-write): one machine-wide lock
# (a tag update per finished job is milliseconds; contention is negligible).
TAG_LOCK_TIMEOUT_S = 30.0


@dataclass
class JobCost:
    job_id: str
    step: str
    assets: list[str] = field(default_factory=list)
    state: str = ""
    node_hours: float = 0.0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0


@dataclass
class RunCost:
    run_id: str
    jobs: list[JobCost]

    def total(self, resource: str) -> float:
        return sum(getattr(j, resource) for j in self.jobs)

    def per_asset(self) -> dict[str, dict[str, float]]:
        """Each asset's share: a job that materialized several assets is split evenly."""
        out: dict[str, dict[str, float]] = {}
        for job in self.jobs:
            for asset in job.assets or [job.step]:
                row = out.setdefault(asset, dict.fromkeys(RESOURCES, 0.0))
                for r in RESOURCES:
                    row[r] += getattr(job, r) / max(1, len(job.assets))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "totals": {r: round(self.total(r), 6) for r in RESOURCES},
            "jobs": [j.__dict__ for j in self.jobs],
            "assets": {
                a: {r: round(v, 6) for r, v in row.items()} for a, row in self.per_asset().items()
            },
        }


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def job_costs(entries: Iterable[Any]) -> list[JobCost]:
    """One JobCost per Slurm job found in a run's materializations and observations."""
    jobs: dict[str, JobCost] = {}
    for entry in entries:
        event = getattr(entry, "dagster_event", None)
        if event is None or not (
            event.is_step_materialization or event.event_type_value == "ASSET_OBSERVATION"
        ):
            continue
        data = event.event_specific_data
        item = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
        md: Mapping[str, Any] = getattr(item, "metadata", {}) or {}
        job_id = _value(md.get(f"{METADATA_PREFIX}job_id"))
        if not job_id:
            continue
        job = jobs.setdefault(str(job_id), JobCost(str(job_id), event.step_key or ""))
        key = item.asset_key.to_user_string()
        if key not in job.assets:
            job.assets.append(key)
        job.state = str(_value(md.get(f"{METADATA_PREFIX}state", job.state)))
        for r in RESOURCES:
            v = _value(md.get(f"{METADATA_PREFIX}{r}"))
            if isinstance(v, int | float):
                setattr(job, r, float(v))
    return list(jobs.values())


def run_cost(instance: Any, run_id: str) -> RunCost:
    return RunCost(run_id, job_costs(instance.all_logs(run_id)))


def add_to_run_tags(context: Any, metadata: Mapping[str, Any]) -> None:
    """Add one finished job's hours to its run's ``dagster-hpc/*_hours`` tags."""
    instance = getattr(context, "instance", None)
    run = getattr(context, "run", None)
    job_id = metadata.get(f"{METADATA_PREFIX}job_id")
    if instance is None or run is None or not job_id:
        return
    try:
        _add_under_lock(instance, run.run_id, str(job_id), metadata)
    except (Timeout, OSError) as exc:  # the job's own metadata has the numbers either way
        log = getattr(getattr(context, "log", None), "warning", None)
        if log is not None:
            log(f"dagster-hpc: the run's cost tags were not updated for job {job_id}: {exc}")


def _add_under_lock(instance: Any, run_id: str, job_id: str, metadata: Mapping[str, Any]) -> None:
    directory = default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(directory / "cost-tags.lock"), timeout=TAG_LOCK_TIMEOUT_S):
        current = instance.get_run_by_id(run_id)
        tags = dict(current.tags) if current is not None else {}
        jobs = [j for j in tags.get(JOBS_TAG, "").split(",") if j]
        if str(job_id) in jobs:
            return  # already counted (a reattached job reported twice)
        new = {JOBS_TAG: ",".join([*jobs, str(job_id)])}
        for r in RESOURCES:
            v = metadata.get(f"{METADATA_PREFIX}{r}")
            if isinstance(v, int | float):
                total = float(tags.get(TAG_PREFIX + r, 0) or 0) + v
                new[TAG_PREFIX + r] = f"{total:.6f}"
        instance.add_run_tags(run_id, new)
