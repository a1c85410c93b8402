"""An in-memory store for tests and notebooks: same semantics as the Delta store, no files."""

from __future__ import annotations

import threading

import polars as pl

from dagster_hpc.incremental.feature import FeatureSpec
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.store.base import MetadataStore


class InMemoryStore(MetadataStore):
    """Current state per feature in a dict of DataFrames (thread-safe, one process)."""

    def __init__(self, graph: FeatureGraph):
        super().__init__(graph)
        self._tables: dict[str, pl.DataFrame] = {}
        self._lock = threading.Lock()

    def _scan(self, feature: FeatureSpec) -> pl.LazyFrame | None:
        with self._lock:
            table = self._tables.get(feature.key)
        return None if table is None else table.lazy()

    def _upsert(self, feature: FeatureSpec, rows: pl.DataFrame) -> None:
        ids = list(feature.id_columns)
        with self._lock:
            current = self._tables.get(feature.key)
            if current is None:
                self._tables[feature.key] = rows
                return
            kept = current.join(rows.select(ids), on=ids, how="anti")
            self._tables[feature.key] = pl.concat([kept, rows], how="diagonal_relaxed")

    def _delete(self, feature: FeatureSpec, ids: pl.DataFrame) -> int:
        cols = list(feature.id_columns)
        with self._lock:
            current = self._tables.get(feature.key)
            if current is None:
                return 0
            kept = current.join(ids, on=cols, how="anti")
            self._tables[feature.key] = kept
            return current.height - kept.height
