"""An in-memory store for tests and notebooks: same semantics as the Delta store, no files."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import polars as pl

from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.store.base import MetadataStore


class InMemoryStore(MetadataStore):
    """Current state per table in a dict of DataFrames (thread-safe, one process)."""

    def __init__(self, graph: FeatureGraph):
        super().__init__(graph)
        self._tables: dict[str, pl.DataFrame] = {}
        self._lock = threading.Lock()

    def _scan_table(self, name: str) -> pl.LazyFrame | None:
        with self._lock:
            table = self._tables.get(name)
        return None if table is None else table.lazy()

    def _merge_table(
        self, name: str, key: Sequence[str], rows: pl.DataFrame, tombstones: pl.DataFrame | None
    ) -> None:
        ids = list(key)
        with self._lock:
            current = self._tables.get(name)
            if current is None:
                self._tables[name] = rows
                return
            kept = current.join(rows.select(ids), on=ids, how="anti")
            if tombstones is not None and tombstones.height:
                kept = kept.join(tombstones.select(ids), on=ids, how="anti")
            self._tables[name] = pl.concat([kept, rows], how="diagonal_relaxed")

    def _delete_table(self, name: str, key: Sequence[str], ids: pl.DataFrame) -> int:
        cols = list(key)
        with self._lock:
            current = self._tables.get(name)
            if current is None:
                return 0
            kept = current.join(ids.select(cols), on=cols, how="anti")
            self._tables[name] = kept
            return current.height - kept.height
