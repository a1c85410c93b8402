"""A Ray Data sink for increments: ``dataset.write_datasink(IncrementalDatasink(...))``.

Importing this module imports Ray (``dagster_hpc.incremental`` itself never does). Each write
task opens the Delta store and writes its rows with ``write_results``: rows with an error are
recorded as failed (they come back in the next increment), never as done; lost commit races
are retried by the store. When everything is written, ``on_write_complete`` (on the driver)
raises ``IncrementalWriteError`` naming how many rows failed and which ids, unless
``raise_on_failed=False``; ``sink.summary`` holds the totals either way.

For an expansion feature, ``parents=`` (the increment rows that went into the pipeline) lets
the driver record the parents whose rows reached no write task (they produced no child) as
done, once every task has succeeded: no task ever sees such a parent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from dagster_hpc.incremental.errors import IncrementalWriteError
from dagster_hpc.incremental.feature import PROVENANCE, PROVENANCE_BY_FIELD, FeatureSpec
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.store.base import ERROR, FAILED_IDS_SHOWN, WriteSummary
from dagster_hpc.incremental.store.delta import DeltaStore

# Simultaneous writers by default: every Delta merge of one table races the others for the
# next log entry, so more writers mostly add retries; two keep the pipeline's tail short.
DEFAULT_MAX_CONCURRENCY = 2
# Rows per write call: fewer, larger merges (each is a Delta commit) instead of one per block.
DEFAULT_MIN_ROWS_PER_WRITE = 1000


@dataclass(frozen=True)
class TaskResult:
    """What one write task returns: its summary and (with ``parents=``) the parent keys its
    rows belonged to, written or failed."""

    summary: WriteSummary
    parent_keys: pl.DataFrame | None = None


class IncrementalDatasink(Datasink[TaskResult]):
    """Writes an increment's results through a ``DeltaStore`` from Ray Data write tasks."""

    def __init__(
        self,
        store_root: str | Path,
        graph: FeatureGraph,
        feature: str | FeatureSpec,
        *,
        error_column: str = ERROR,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        min_rows_per_write: int | None = DEFAULT_MIN_ROWS_PER_WRITE,
        raise_on_failed: bool = True,
        parents: pl.DataFrame | None = None,
    ):
        if not isinstance(graph, FeatureGraph):
            raise TypeError(f"IncrementalDatasink needs a FeatureGraph, got {type(graph).__name__}")
        spec = graph.feature(feature)
        self._key = list(graph.resolve_key(spec))
        if parents is not None:
            if not graph.is_expansion(spec):
                raise ValueError(
                    f"IncrementalDatasink({spec.key!r}): parents= is for expansion features "
                    "(a parent with no child); this feature has one row per sample."
                )
            if not isinstance(parents, pl.DataFrame):
                raise TypeError(
                    f"parents must be a polars DataFrame (the increment rows), "
                    f"got {type(parents).__name__}"
                )
            wanted = self._key + [PROVENANCE, PROVENANCE_BY_FIELD]
            missing = [c for c in wanted if c not in parents.columns]
            if missing:
                raise ValueError(
                    f"IncrementalDatasink({spec.key!r}): parents lack column(s) {missing}; pass "
                    "the increment rows (e.g. increment.to_process())."
                )
            parents = parents.select(wanted)
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        self.store_root = str(store_root)
        self.graph = graph
        self.feature = graph.feature(feature).key
        self.error_column = error_column
        self.max_concurrency = max_concurrency
        self._min_rows = min_rows_per_write
        self.raise_on_failed = raise_on_failed
        self.summary: WriteSummary | None = None
        self.empty_parents: int | None = None  # recorded by on_write_complete (parents=)
        self._parents = parents
        self._track_parents = parents is not None

    def __getstate__(self) -> dict:
        # The write tasks need no parents (only the driver does): do not ship them.
        return {**self.__dict__, "_parents": None}

    @property
    def min_rows_per_write(self) -> int | None:
        return self._min_rows

    def get_name(self) -> str:
        return f"Incremental({self.feature})"

    def write(self, blocks: Iterable[Block], ctx) -> TaskResult:
        frames = [pl.from_arrow(BlockAccessor.for_block(b).to_arrow()) for b in blocks]
        frames = [f for f in frames if isinstance(f, pl.DataFrame) and f.height]
        if not frames:
            return TaskResult(WriteSummary(0, 0))
        rows = pl.concat(frames, how="diagonal_relaxed")
        store = DeltaStore(self.store_root, self.graph)
        summary = store.write_results(self.feature, rows, error_column=self.error_column)
        keys = None
        if self._track_parents:
            keys = rows.select(self._key).unique()
        return TaskResult(summary, keys)

    def on_write_complete(self, write_result) -> None:
        total = WriteSummary(0, 0)
        seen = []
        for result in write_result.write_returns:
            total = total + result.summary
            if result.parent_keys is not None:
                seen.append(result.parent_keys)
        self.summary = total
        if self._parents is not None:  # every task succeeded, or this would not run
            empty = self._parents
            if seen:
                reached = pl.concat(seen, how="vertical_relaxed").unique()
                empty = empty.join(reached, on=self._key, how="anti")
            store = DeltaStore(self.store_root, self.graph)
            self.empty_parents = store.write_empty_parents(self.feature, empty)
        if total.failed and self.raise_on_failed:
            raise IncrementalWriteError(
                f"{total.failed} sample(s) of {self.feature!r} failed and were recorded as "
                f"failed (not done; they come back in the next increment); "
                f"{total.written} row(s) were written. Failed ids (first {FAILED_IDS_SHOWN}): "
                f"{list(total.failed_ids)}",
                failed=total.failed,
                failed_ids=total.failed_ids,
            )
