"""What every step of the pipeline does around its computation, on the engine's public API:
resolve the increment, hand over only new + stale + failed samples, write the results (failures
recorded as failed), delete orphans, and report the counts Dagster shows and the example prints.
No Dagster import here: the counts are plain values (assets.py turns them into metadata).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from dagster_hpc.incremental import DATA_VERSION, STALE_FIELDS, STALE_REASON, Increment

# Longest list of ids/errors put into metadata (the rest is in the store).
PREVIEW = 10


@dataclass
class StepReport:
    """One step's increment and what it did (mutable while the step runs, then reported)."""

    feature: str
    new: int = 0
    stale: int = 0
    orphaned: int = 0
    failed_before: int = 0  # samples that failed last time and were retried
    computed: int = 0
    failed: int = 0  # failed in this run
    deleted: int = 0
    stale_fields: dict[str, int] = field(default_factory=dict)
    stale_reasons: dict[str, int] = field(default_factory=dict)
    path: str = "none"  # where it computed: none / in-process / ray
    failed_ids: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def of(cls, feature: str, increment: Increment) -> StepReport:
        inc = increment.collect()
        counts = inc.counts()
        report = cls(
            feature,
            new=counts["new"],
            stale=counts["stale"],
            orphaned=counts["orphaned"],
            failed_before=counts.get("failed", 0),
        )
        if inc.stale.height:
            fields = Counter(f for row in inc.stale[STALE_FIELDS].to_list() for f in row)
            report.stale_fields = dict(sorted(fields.items()))
            reasons = Counter(inc.stale[STALE_REASON].to_list())
            report.stale_reasons = dict(sorted(reasons.items()))
        return report

    @property
    def to_process(self) -> int:
        return self.new + self.stale + self.failed_before

    def summary(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.stale_fields.items()) or "-"
        return (
            f"{self.feature}: new={self.new} stale={self.stale} orphaned={self.orphaned} "
            f"failed_last_time={self.failed_before} -> computed={self.computed} "
            f"failed={self.failed} ({self.path}); stale fields: {fields}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "new": self.new,
            "stale": self.stale,
            "orphaned": self.orphaned,
            "failed_last_time": self.failed_before,
            "computed": self.computed,
            "failed": self.failed,
            "orphans_deleted": self.deleted,
            "stale_fields": self.stale_fields,
            "stale_reasons": self.stale_reasons,
            "path": self.path,
            "failed_ids": self.failed_ids[:PREVIEW],
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def data_version(stored: pl.LazyFrame) -> str:
    """An order-independent digest of a feature's stored data versions (Dagster's DataVersion):
    unchanged when a run changed nothing."""
    names = stored.collect_schema().names()
    if DATA_VERSION not in names:
        return "empty"
    total = stored.select(
        pl.col(DATA_VERSION).cast(pl.UInt64, wrap_numerical=True).sum().alias("s"),
        pl.len().alias("n"),
    ).collect()
    return f"{int(total['s'][0] or 0) & ((1 << 64) - 1):016x}-{total['n'][0]}"


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
