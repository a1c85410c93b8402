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
import os
import random
import time
from collections.abc import Sequence
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
# The format marker beside the Delta log: Delta ignores files starting with "_", and unlike the
# table description no commit (a schema-evolving merge drops the description) can remove it.
MARKER_FILE = "_dagster_hpc_incremental.json"
_SOURCE, _TARGET = "s", "t"
_TOMBSTONE = "_dhpc_tombstone"
# A table of reader version 1 (no column mapping, no deletion vectors: what delta-rs writes
# for our tables) is its Parquet files as listed in the log, so they are scanned directly.
_PLAIN_READER_VERSION = 1
# How files written before a schema change are read against the table's schema (the options
# polars' own Delta scan uses): missing columns / struct fields as null, wider numbers upcast.
_CAST_OPTIONS = pl.ScanCastOptions(
    integer_cast="upcast",
    float_cast=["upcast", "downcast"],
    datetime_cast=("nanosecond-downcast", "millisecond-upcast", "convert-timezone"),
    missing_struct_fields="insert",
    extra_struct_fields="ignore",
)
log = logging.getLogger(__name__)


def _table_description() -> str:
    return json.dumps({"dagster_hpc_incremental": TABLE_FORMAT, "hash_algorithm": HASH_ALGORITHM})


def _parse(text: str | None) -> dict | None:
    try:
        info = json.loads(text or "")
    except json.JSONDecodeError:
        return None
    return info if isinstance(info, dict) else None


def _read_marker(path: Path) -> dict | None:
    try:
        return _parse((path / MARKER_FILE).read_text())
    except FileNotFoundError:
        return None


def _write_marker(path: Path) -> None:
    """Atomically (rename), so a concurrent reader sees the whole marker or none."""
    target = path / MARKER_FILE
    if target.exists():
        return
    tmp = path / f"{MARKER_FILE}.{os.getpid()}.{random.getrandbits(32):08x}"
    tmp.write_text(_table_description())
    os.replace(tmp, target)


def _scan(table: DeltaTable) -> pl.LazyFrame:
    """The table's current rows. Plain tables are scanned as their Parquet files (polars' Delta
    scan calls back into Python at collect time, ~5-8 ms per scan in a fresh process, which is
    most of a small first resolve); anything else goes through ``pl.scan_delta``."""
    if (
        table.protocol().min_reader_version > _PLAIN_READER_VERSION
        or table.metadata().partition_columns
    ):
        return pl.scan_delta(table)
    schema = pl.Schema(table.schema())
    files = table.file_uris()
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(
        files,
        schema=schema,
        missing_columns="insert",
        extra_columns="ignore",
        cast_options=_CAST_OPTIONS,
    )


def _with_tombstones(rows: pl.DataFrame, tombstones: pl.DataFrame | None) -> pl.DataFrame:
    live = rows.with_columns(pl.lit(False).alias(_TOMBSTONE))
    if tombstones is None or tombstones.height == 0:
        return live
    dead = tombstones.with_columns(pl.lit(True).alias(_TOMBSTONE))
    return pl.concat([live, dead], how="diagonal_relaxed")


class DeltaStore(MetadataStore):
    """Features as Delta tables under ``root`` (a local or shared-filesystem directory)."""

    def __init__(self, root: str | Path, graph: FeatureGraph):
        super().__init__(graph)
        self.root = Path(root)

    def table_path(self, feature: FeatureSpec | str) -> Path:
        name = feature.key if isinstance(feature, FeatureSpec) else feature
        return self.root / name.replace("/", "__")

    # Primitives -------------------------------------------------------------------------------
    def _open(self, name: str) -> DeltaTable | None:
        path = self.table_path(name)
        if not (path / "_delta_log").is_dir():
            return None
        try:
            table = DeltaTable(str(path))
        except TableNotFoundError:
            return None  # the creating writer has not committed version 0 yet
        self._check_format(name, path, table)
        return table

    def _check_format(self, name: str, path: Path, table: DeltaTable) -> None:
        """The table's format marker: a file written before the table was created (it survives
        every commit), else the description (tables of earlier versions), else the description
        of version 0 (a schema-evolving merge drops the description of later versions)."""
        info = _read_marker(path)
        if info is None:
            info = _parse(table.metadata().description)
        if info is None:
            try:
                info = _parse(DeltaTable(str(path), version=0).metadata().description)
            except DeltaError:  # version 0 cleaned up by log retention
                info = None
        algorithm = info.get("hash_algorithm") if info else None
        if algorithm != HASH_ALGORITHM:
            raise HashAlgorithmMismatchError(
                f"table {path} for {name!r} holds provenance hashed with {algorithm!r}, this "
                f"version uses {HASH_ALGORITHM!r}: the two cannot be compared. Write to a new "
                "store root, or delete the table to recompute."
            )

    def _scan_table(self, name: str) -> pl.LazyFrame | None:
        table = self._open(name)
        return None if table is None else _scan(table)

    def _merge_table(
        self, name: str, key: Sequence[str], rows: pl.DataFrame, tombstones: pl.DataFrame | None
    ) -> None:
        data = _with_tombstones(rows, tombstones).to_arrow()
        has_tombstones = tombstones is not None and tombstones.height > 0
        self._with_retries(
            name,
            "write",
            lambda table: self._upsert_once(name, key, table, data, has_tombstones),
        )

    def _delete_table(self, name: str, key: Sequence[str], ids: pl.DataFrame) -> int:
        data = ids.to_arrow()

        def attempt(table: DeltaTable | None) -> int:
            if table is None:
                return 0
            result = (
                table.merge(
                    source=data,
                    predicate=self._predicate(key),
                    source_alias=_SOURCE,
                    target_alias=_TARGET,
                )
                .when_matched_delete()
                .execute()
            )
            return int(result.get("num_target_rows_deleted", 0))

        return self._with_retries(name, "delete", attempt)

    # Maintenance ------------------------------------------------------------------------------
    def compact(self, feature: str | FeatureSpec) -> dict:
        """Merge small files and write a checkpoint (run now and then, e.g. nightly)."""
        spec = self.graph.feature(feature)
        table = self._open(spec.key)
        if table is None:
            return {}
        metrics = self._with_retries(spec.key, "compact", lambda t: t.optimize.compact())
        DeltaTable(str(self.table_path(spec))).create_checkpoint()
        return metrics

    # Internals --------------------------------------------------------------------------------
    @staticmethod
    def _predicate(key: Sequence[str]) -> str:
        # Id columns are checked identifiers (see feature.py), so they need no quoting here.
        return " AND ".join(f"{_TARGET}.{c} = {_SOURCE}.{c}" for c in key)

    def _upsert_once(
        self, name: str, key: Sequence[str], table: DeltaTable | None, data, has_tombstones: bool
    ) -> None:
        if table is None:
            table = self._create(name, data.schema.remove(data.schema.get_field_index(_TOMBSTONE)))
        if data.num_rows == 0:
            return
        live = f"NOT {_SOURCE}.{_TOMBSTONE}"
        merger = table.merge(
            source=data,
            predicate=self._predicate(key),
            source_alias=_SOURCE,
            target_alias=_TARGET,
            merge_schema=True,
        )
        if has_tombstones:
            merger = merger.when_matched_delete(predicate=f"{_SOURCE}.{_TOMBSTONE}")
        (
            merger.when_matched_update_all(predicate=live, except_cols=[_TOMBSTONE])
            .when_not_matched_insert_all(predicate=live, except_cols=[_TOMBSTONE])
            .execute()
        )

    def _create(self, name: str, schema) -> DeltaTable:
        """Create the table EMPTY, then merge into it like every later write.

        Creating it with the first rows would be unsafe: delta-rs retries a losing blind append
        as the next version, so two writers creating the table at once would both insert their
        rows (duplicates). An empty create that races is harmless; the merges that follow are
        conflict-checked against each other. The format marker is written first, so a table
        never exists without it.
        """
        path = self.table_path(name)
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path)
        write_deltalake(
            str(path), schema.empty_table(), mode="ignore", description=_table_description()
        )
        return DeltaTable(str(path))

    def _with_retries(self, name: str, action: str, attempt):
        backoff = COMMIT_BACKOFF_S
        last: Exception | None = None
        for _ in range(MAX_COMMIT_ATTEMPTS):
            table = self._open(name)
            try:
                return attempt(table)
            except CommitFailedError as exc:  # another writer committed first
                last = exc
            except DeltaError as exc:
                # Creating a table that another writer created a moment ago.
                if table is not None or "already exists" not in str(exc).lower():
                    raise
                last = exc
            log.debug("%s on %s lost a commit race (%s); retrying", action, name, last)
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, COMMIT_BACKOFF_CAP_S)
        raise StoreError(
            f"{action} on {name!r} ({self.table_path(name)}) lost "
            f"{MAX_COMMIT_ATTEMPTS} commit races in a row to other writers; last error: {last}. "
            "Retry later or write in larger batches."
        )


def open_delta_store(root: str | Path, graph: FeatureGraph) -> DeltaStore:
    """Convenience for payloads: ``open_delta_store(extras['store_root'], graph)``."""
    return DeltaStore(root, graph)
