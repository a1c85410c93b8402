"""What a multi-task step returns: one ``TaskResult`` per item, and the error naming failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagster_hpc.errors import PayloadError

# How many failed items an error message spells out in full (the rest are counted).
FAILED_ITEMS_SHOWN = 10
# stderr lines per failed item in the error message.
FAILED_ITEM_STDERR_LINES = 8


@dataclass
class TaskResult:
    """One item of an array, a hetjob component or a session step, after it ended."""

    index: int
    key: str
    extras: dict[str, Any]
    exit_code: int | None
    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
    job_id: str  # Slurm: "<array job>_<array index>", "<job>+<component>", "<job>.<step>"
    run_dir: str
    metadata: dict[str, Any] = field(default_factory=dict)  # reported by the payload + metrics
    checks: list[dict[str, Any]] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    exception: str | None = None  # the payload's exception, if dagster_pipes reported one
    reused: bool = False  # succeeded in an earlier attempt (re-execution): not run again

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.state == "COMPLETED"

    def describe_failure(self) -> str:
        code = "no exit code (killed?)" if self.exit_code is None else f"exit code {self.exit_code}"
        tail = self.stderr_tail[-FAILED_ITEM_STDERR_LINES:]
        lines = [f"  {self.key}: {self.state}, {code}, job {self.job_id}"]
        if self.exception:
            lines.append(f"    exception: {self.exception}")
        lines += [f"    | {line}" for line in tail] or ["    | (stderr was empty)"]
        return "\n".join(lines)


@dataclass
class MultiTaskOutcome:
    """All items of one multi-task step."""

    kind: str  # "array", "hetjob", "session"
    run_dir: str
    results: list[TaskResult]
    submissions: int  # sbatch calls this attempt made
    job_ids: list[str]

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if not r.ok]

    def by_key(self) -> dict[str, TaskResult]:
        return {r.key: r for r in self.results}

    def summary_metadata(self) -> dict[str, Any]:
        return {
            f"dagster-hpc/{self.kind}_items": len(self.results),
            f"dagster-hpc/{self.kind}_failed": len(self.failed),
            f"dagster-hpc/{self.kind}_reused": sum(r.reused for r in self.results),
            f"dagster-hpc/{self.kind}_sbatch_calls": self.submissions,
            "slurm/job_ids": ",".join(self.job_ids),
            "slurm/run_dir": self.run_dir,
        }

    def error(self) -> PayloadError | None:
        failed = self.failed
        if not failed:
            return None
        shown = "\n".join(r.describe_failure() for r in failed[:FAILED_ITEMS_SHOWN])
        more = (
            f"\n  ... and {len(failed) - FAILED_ITEMS_SHOWN} more: "
            + ", ".join(r.key for r in failed[FAILED_ITEMS_SHOWN:])
            if len(failed) > FAILED_ITEMS_SHOWN
            else ""
        )
        keys = ", ".join(r.key for r in failed)
        return PayloadError(
            f"{len(failed)} of {len(self.results)} {self.kind} items failed: {keys}\n{shown}{more}\n"
            f"hint: each item's output is in {self.run_dir}/t/<index>/stdout.log and stderr.log; "
            "re-execute the run (e.g. from failure): the items that succeeded are kept, only the "
            "failed ones run again"
        )


@dataclass
class MultiTaskInvocation:
    """``compute.run(...)`` of a multi-partition step: ``yield from ....get_results()``.

    Each partition's metadata (what its task reported + its Slurm metrics) was attached to that
    partition's materialization already (``context.add_asset_metadata``); get_results adds the
    step's summary to every selected asset."""

    outcome: MultiTaskOutcome
    asset_keys: Sequence[dg.AssetKey]

    def get_results(self) -> list[dg.MaterializeResult]:
        md = self.outcome.summary_metadata()
        return [dg.MaterializeResult(asset_key=k, metadata=md) for k in self.asset_keys]
