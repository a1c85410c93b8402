"""Local records of the Slurm jobs this machine's Dagster runs have in flight.

One small JSON file per job, written right after ``sbatch`` answered (beside the launch handle
recorded in the Dagster run) and removed when the step has seen the job end (or cancelled it).
So the reconcile sensor knows from the local disk alone whether anything can be left burning:
an empty directory means nothing to check, and it costs no SSH round trip and no scheduler
query. A step process killed mid-job leaves its record behind; that is exactly the case the
sensor exists for.

Records are kept per Dagster instance (its root directory): a sensor only ever judges jobs of
runs it can look up, so a deployment never cancels the jobs of another deployment (or of a test
with its own instance) on the same machine. Runs on an ephemeral instance write no record:
no other process could look their runs up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dagster_hpc.backends.slurm_poller import default_cache_dir

RECORDS_DIR_NAME = "launches"
AUDIT_LOG_NAME = "reconcile-log.jsonl"


@dataclass(frozen=True)
class LaunchRecord:
    run_id: str
    step: str
    job_id: str
    cluster: str
    run_dir: str
    submitted_at: float
    cancel_sent_at: float | None = None  # the sensor sent scancel (waiting for Slurm to confirm)
    cancel_reason: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LaunchRecord:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def instance_key(instance: object) -> str | None:
    """Identity of a persistent Dagster instance (None: ephemeral, nothing to record)."""
    if not getattr(instance, "is_persistent", False):
        return None
    root = str(Path(instance.root_directory).resolve())  # type: ignore[attr-defined]
    return hashlib.sha256(root.encode()).hexdigest()[:16]


class LaunchRecords:
    """The record directory of one Dagster instance on this machine."""

    def __init__(self, instance_id: str, base_dir: Path | None = None):
        self.directory = (base_dir or default_cache_dir() / RECORDS_DIR_NAME) / instance_id
        self.audit_log = self.directory / AUDIT_LOG_NAME

    @classmethod
    def for_instance(cls, instance: object, base_dir: Path | None = None) -> LaunchRecords | None:
        key = instance_key(instance)
        return None if key is None else cls(key, base_dir)

    def _path(self, cluster: str, job_id: str) -> Path:
        digest = hashlib.sha256(cluster.encode()).hexdigest()[:12]
        return self.directory / f"{digest}-{job_id}.json"

    def write(self, record: LaunchRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(record.cluster, record.job_id)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)

    def remove(self, cluster: str, job_id: str) -> None:
        self._path(cluster, job_id).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[LaunchRecord]:
        """Every record (one directory listing; nothing else is read when it is empty)."""
        try:
            paths = sorted(self.directory.glob("*.json"))
        except FileNotFoundError:
            return
        for path in paths:
            try:
                yield LaunchRecord.from_json(path.read_text())
            except FileNotFoundError:
                continue  # the step removed it meanwhile
            except (ValueError, TypeError):
                continue  # torn or foreign file: the next write of that job replaces it

    def audit(self, **entry: object) -> None:
        """Append what the sensor did (run id, job id, why) to the audit log."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = json.dumps({"at": time.time(), **entry}, default=str)
        with self.audit_log.open("a") as fh:
            fh.write(line + "\n")

    def audit_entries(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]
        except FileNotFoundError:
            return []


def _step_of(context: object) -> str:
    op_context = getattr(context, "op_execution_context", context)
    try:
        return op_context.op.name  # type: ignore[attr-defined]
    except AttributeError:
        return ""


def remember(context: object, handle: object) -> None:
    """Record a just-submitted (or reattached) job of the step running in ``context``."""
    records = LaunchRecords.for_instance(getattr(context, "instance", None))
    if records is None:
        return
    try:
        _write_for(records, context, handle)
    except OSError as exc:  # the job runs anyway: say what the sensor will not see
        context.log.warning(  # type: ignore[attr-defined]
            f"dagster-hpc: could not write the launch record of job {handle.job_id} in "  # type: ignore[attr-defined]
            f"{records.directory} ({exc}): the reconcile sensor will not watch it"
        )


def _write_for(records: LaunchRecords, context: object, handle: object) -> None:
    records.write(
        LaunchRecord(
            run_id=context.run.run_id,  # type: ignore[attr-defined]
            step=_step_of(context),
            job_id=handle.job_id,  # type: ignore[attr-defined]
            cluster=handle.cluster,  # type: ignore[attr-defined]
            run_dir=handle.run_dir,  # type: ignore[attr-defined]
            submitted_at=time.time(),
        )
    )


def forget(context: object, handle: object) -> None:
    """The step saw its job end (or cancelled it): nothing left for the sensor to watch."""
    records = LaunchRecords.for_instance(getattr(context, "instance", None))
    if records is None:
        return
    try:
        records.remove(handle.cluster, handle.job_id)  # type: ignore[attr-defined]
    except OSError:
        return  # a stale record only costs the sensor one squeue when its run has finished
