"""A Delta Lake store (deltalake + polars): one table per feature, holding the current state.

Why Delta: its optimistic commits (an atomic put-if-absent of the next log entry) let several
processes, on several nodes of a shared filesystem, write the same table without a server and
without losing a write; a losing writer gets a commit conflict and simply retries on the new
version. Writes are MERGE upserts on the id columns, so the table IS the current state: reading
it never replays history (``compact()`` merges small files and writes a checkpoint).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from dagster_hpc.incremental.errors import HashAlgorithmMismatchError, StoreError
from dagster_hpc.incremental.feature import FeatureSpec
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.provenance import HASH_ALGORITHM
from dagster_hpc.incremental.store.base import MetadataStore

# How often a writer retries after losing a commit race. Each loss means another writer
# committed, so progress is guaranteed; 50 covers dozens of simultaneous writers.
MAX_COMMIT_ATTEMPTS = 50
# First back-off after a lost race, doubled each time up to the cap; jittered so that racing
# writers spread out instead of colliding again in lock step.
COMMIT_BACKOFF_S = 0.02
COMMIT_BACKOFF_CAP_S = 1.0
# Stored in each table's description; checked on every read.
TABLE_FORMAT = 1
_SOURCE, _TARGET = "s", "t"
log = logging.getLogger(__name__)


def _table_description() -> str:
    return json.dumps({"dagster_hpc_incremental": TABLE_FORMAT, "hash_algorithm": HASH_ALGORITHM})


class DeltaStore(MetadataStore):
    """Features as Delta tables under ``root`` (a local or shared-filesystem directory)."""

    def __init__(self, root: str | Path, graph: FeatureGraph):
        super().__init__(graph)
        self.root = Path(root)

    def table_path(self, feature: FeatureSpec) -> Path:
        return self.root / feature.key.replace("/", "__")

    # Primitives -------------------------------------------------------------------------------
    def _open(self, feature: FeatureSpec) -> DeltaTable | None:
        path = self.table_path(feature)
        if not (path / "_delta_log").is_dir():
            return None
        try:
            table = DeltaTable(str(path))
        except TableNotFoundError:
            return None  # the creating writer has not committed version 0 yet
        self._check_format(feature, table)
        return table

    def _check_format(self, feature: FeatureSpec, table: DeltaTable) -> None:
        description = table.metadata().description or ""
        try:
            info = json.loads(description)
        except json.JSONDecodeError:
            info = {}
        algorithm = info.get("hash_algorithm") if isinstance(info, dict) else None
        if algorithm != HASH_ALGORITHM:
            raise HashAlgorithmMismatchError(
                f"table {self.table_path(feature)} for feature {feature.key!r} holds provenance "
                f"hashed with {algorithm!r}, this version uses {HASH_ALGORITHM!r}: the two cannot "
                "be compared. Write to a new store root, or delete the table to recompute."
            )

    def _scan(self, feature: FeatureSpec) -> pl.LazyFrame | None:
        table = self._open(feature)
        return None if table is None else pl.scan_delta(table)

    def _upsert(self, feature: FeatureSpec, rows: pl.DataFrame) -> None:
        data = rows.to_arrow()
        self._with_retries(feature, "write", lambda table: self._upsert_once(feature, table, data))

    def _delete(self, feature: FeatureSpec, ids: pl.DataFrame) -> int:
        data = ids.to_arrow()

        def attempt(table: DeltaTable | None) -> int:
            if table is None:
                return 0
            result = (
                table.merge(
                    source=data,
                    predicate=self._predicate(feature),
                    source_alias=_SOURCE,
                    target_alias=_TARGET,
                )
                .when_matched_delete()
                .execute()
            )
            return int(result.get("num_target_rows_deleted", 0))

        return self._with_retries(feature, "delete", attempt)

    # Maintenance ------------------------------------------------------------------------------
    def compact(self, feature: str | FeatureSpec) -> dict:
        """Merge small files and write a checkpoint (run now and then, e.g. nightly)."""
        spec = self.graph.feature(feature)
        table = self._open(spec)
        if table is None:
            return {}
        metrics = self._with_retries(spec, "compact", lambda t: t.optimize.compact())
        DeltaTable(str(self.table_path(spec))).create_checkpoint()
        return metrics

    # Internals --------------------------------------------------------------------------------
    @staticmethod
    def _predicate(feature: FeatureSpec) -> str:
        # Id columns are checked identifiers (see feature.py), so they need no quoting here.
        return " AND ".join(f"{_TARGET}.{c} = {_SOURCE}.{c}" for c in feature.id_columns)

    def _upsert_once(self, feature: FeatureSpec, table: DeltaTable | None, data) -> None:
        if table is None:
            table = self._create(feature, data.schema)
        (
            table.merge(
                source=data,
                predicate=self._predicate(feature),
                source_alias=_SOURCE,
                target_alias=_TARGET,
                merge_schema=True,
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def _create(self, feature: FeatureSpec, schema) -> DeltaTable:
        """Create the table EMPTY, then merge into it like every later write.

        Creating it with the first rows would be unsafe: delta-rs retries a losing blind append
        as the next version, so two writers creating the table at once would both insert their
        rows (duplicates). An empty create that races is harmless; the merges that follow are
        conflict-checked against each other.
        """
        path = self.table_path(feature)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            str(path), schema.empty_table(), mode="ignore", description=_table_description()
        )
        return DeltaTable(str(path))

    def _with_retries(self, feature: FeatureSpec, action: str, attempt):
        backoff = COMMIT_BACKOFF_S
        last: Exception | None = None
        for _ in range(MAX_COMMIT_ATTEMPTS):
            table = self._open(feature)
            try:
                return attempt(table)
            except CommitFailedError as exc:  # another writer committed first
                last = exc
            except DeltaError as exc:
                # Creating a table that another writer created a moment ago.
                if table is not None or "already exists" not in str(exc).lower():
                    raise
                last = exc
            log.debug("%s on %s lost a commit race (%s); retrying", action, feature.key, last)
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, COMMIT_BACKOFF_CAP_S)
        raise StoreError(
            f"{action} on feature {feature.key!r} ({self.table_path(feature)}) lost "
            f"{MAX_COMMIT_ATTEMPTS} commit races in a row to other writers; last error: {last}. "
            "Retry later or write in larger batches."
        )


def open_delta_store(root: str | Path, graph: FeatureGraph) -> DeltaStore:
    """Convenience for payloads: ``open_delta_store(extras['store_root'], graph)``."""
    return DeltaStore(root, graph)
