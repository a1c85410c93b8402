"""A Ray Data sink for increments: ``dataset.write_datasink(IncrementalDatasink(...))``.

Importing this module imports Ray (``dagster_hpc.incremental`` itself never does). Each write
task opens the Delta store and writes its rows with ``write_results``: rows with an error are
recorded as failed (they come back in the next increment), never as done; lost commit races
are retried by the store. When everything is written, ``on_write_complete`` (on the driver)
raises ``IncrementalWriteError`` naming how many rows failed and which ids, unless
``raise_on_failed=False``; ``sink.summary`` holds the totals either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from dagster_hpc.incremental.errors import IncrementalWriteError
from dagster_hpc.incremental.feature import FeatureSpec
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.store.base import ERROR, FAILED_IDS_SHOWN, WriteSummary
from dagster_hpc.incremental.store.delta import DeltaStore

# Simultaneous writers by default: every Delta merge of one table races the others for the
# next log entry, so more writers mostly add retries; two keep the pipeline's tail short.
DEFAULT_MAX_CONCURRENCY = 2
# Rows per write call: fewer, larger merges (each is a Delta commit) instead of one per block.
DEFAULT_MIN_ROWS_PER_WRITE = 1000


class IncrementalDatasink(Datasink[WriteSummary]):
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
    ):
        if not isinstance(graph, FeatureGraph):
            raise TypeError(f"IncrementalDatasink needs a FeatureGraph, got {type(graph).__name__}")
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

    @property
    def min_rows_per_write(self) -> int | None:
        return self._min_rows

    def get_name(self) -> str:
        return f"Incremental({self.feature})"

    def write(self, blocks: Iterable[Block], ctx) -> WriteSummary:
        frames = [pl.from_arrow(BlockAccessor.for_block(b).to_arrow()) for b in blocks]
        frames = [f for f in frames if isinstance(f, pl.DataFrame) and f.height]
        if not frames:
            return WriteSummary(0, 0)
        rows = pl.concat(frames, how="diagonal_relaxed")
        store = DeltaStore(self.store_root, self.graph)
        return store.write_results(self.feature, rows, error_column=self.error_column)

    def on_write_complete(self, write_result) -> None:
        total = WriteSummary(0, 0)
        for summary in write_result.write_returns:
            total = total + summary
        self.summary = total
        if total.failed and self.raise_on_failed:
            raise IncrementalWriteError(
                f"{total.failed} sample(s) of {self.feature!r} failed and were recorded as "
                f"failed (not done; they come back in the next increment); "
                f"{total.written} row(s) were written. Failed ids (first {FAILED_IDS_SHOWN}): "
                f"{list(total.failed_ids)}",
                failed=total.failed,
                failed_ids=total.failed_ids,
            )
