"""The store interface and everything that does not depend on where tables live.

A store holds, per feature, the CURRENT state: one row per sample with its id columns, the
user's columns, ``provenance_by_field``/``provenance``, ``data_version_by_field``/
``data_version`` and ``code_version_by_field``. Writes are upserts on the id columns, so reading
the current state never replays history.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from dagster_hpc.incremental.errors import SamplesError
from dagster_hpc.incremental.expected import check_filter_columns, downstream_expected
from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    RESERVED_COLUMNS,
    FeatureSpec,
)
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.provenance import (
    root_provenance_exprs,
    with_provenance,
    with_versions,
)
from dagster_hpc.incremental.resolve import (
    FAILURES,
    FORCED_STALE,
    LAST_ERROR,
    Increment,
    compute_increment,
)

AnyFrame = pl.DataFrame | pl.LazyFrame
# The failure / empty-parent records of a feature live in a table of this name beside it.
ATTEMPTS_SUFFIX = ".attempts"
ERROR = "error"
STATUS = "status"
STATUS_FAILED = "failed"
STATUS_EMPTY = "empty"  # an expansion parent that produced no children: done
_TOMBSTONE = "_dhpc_tombstone"
# How many failed ids a summary / error message names.
FAILED_IDS_SHOWN = 20


@dataclass(frozen=True)
class WriteSummary:
    """What a ``write_results`` call stored: done rows, failed samples and (some of) their ids."""

    written: int
    failed: int
    failed_ids: tuple[dict, ...] = ()

    def __add__(self, other: WriteSummary) -> WriteSummary:
        ids = (self.failed_ids + other.failed_ids)[:FAILED_IDS_SHOWN]
        return WriteSummary(self.written + other.written, self.failed + other.failed, ids)


class MetadataStore(ABC):
    """Per-feature current state + ``resolve_update``. Subclasses implement four primitives on
    named tables (a feature's table is named by its key; its attempts table by key + suffix)."""

    def __init__(self, graph: FeatureGraph):
        if not isinstance(graph, FeatureGraph):
            raise TypeError(f"a store needs a FeatureGraph, got {type(graph).__name__}")
        self.graph = graph

    # Primitives -------------------------------------------------------------------------------
    @abstractmethod
    def _scan_table(self, name: str) -> pl.LazyFrame | None:
        """The current rows of a table, or None when it was never written."""

    @abstractmethod
    def _merge_table(
        self, name: str, key: Sequence[str], rows: pl.DataFrame, tombstones: pl.DataFrame | None
    ) -> None:
        """Atomically: insert or replace ``rows`` by ``key`` and delete the ``tombstones`` keys.

        An empty ``rows`` frame creates the (empty) table if it does not exist."""

    @abstractmethod
    def _delete_table(self, name: str, key: Sequence[str], ids: pl.DataFrame) -> int:
        """Delete the rows with these keys; return how many were deleted."""

    def _scan(self, feature: FeatureSpec) -> pl.LazyFrame | None:
        return self._scan_table(feature.key)

    def _attempts(self, feature: FeatureSpec) -> pl.LazyFrame | None:
        return self._scan_table(feature.key + ATTEMPTS_SUFFIX)

    # Public API -------------------------------------------------------------------------------
    def read(self, feature: str | FeatureSpec, *, lazy: bool = False) -> AnyFrame:
        """The current state of a feature (empty frame with the id columns if never written)."""
        spec = self.graph.feature(feature)
        lf = self._scan(spec)
        if lf is None:
            lf = pl.LazyFrame(schema={c: pl.String for c in spec.id_columns})
        return lf if lazy else lf.collect()

    def read_failed(self, feature: str | FeatureSpec) -> pl.DataFrame:
        """The failure records (resolve key, provenance, last_error, failures) of a feature."""
        spec = self.graph.feature(feature)
        key = list(self.graph.resolve_key(spec))
        lf = self._attempts(spec)
        if lf is None:
            return pl.DataFrame(
                schema={**{c: pl.String for c in key}, LAST_ERROR: pl.String, FAILURES: pl.Int64}
            )
        return lf.filter(pl.col(STATUS) == STATUS_FAILED).drop(STATUS).collect()

    def write(
        self, feature: str | FeatureSpec, rows: AnyFrame, *, parents: AnyFrame | None = None
    ) -> int:
        """Upsert computed samples: the frames of ``resolve_update`` with your columns added.

        Set a ``data_version_by_field`` struct (e.g. a content hash per field) to override the
        data version; downstream fields then stay up to date when that value did not change.
        For an expansion feature the write replaces each written parent's children (older
        versions are deleted in the same commit); ``parents=`` (the increment rows you computed)
        also records parents that produced no child as done. An empty frame still creates the
        table, so "written, empty" differs from "never written".
        """
        spec = self.graph.feature(feature)
        df = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
        self._check_rows(spec, df)
        drop = [c for c in (DATA_VERSION, CODE_VERSION_BY_FIELD) if c in df.columns]
        drop += [c for c in df.columns if c.startswith("__")]
        prepared = with_versions(df.drop(drop), spec)
        key = list(self.graph.resolve_key(spec))
        tombstones = None
        empty = None
        if self.graph.is_expansion(spec):
            parent_rows = prepared.select(key + [PROVENANCE]).unique(key)
            if parents is not None:
                given = parents.collect() if isinstance(parents, pl.LazyFrame) else parents
                self._check_key(spec, given, key + [PROVENANCE, PROVENANCE_BY_FIELD], "parents")
                empty = given.select(key + [PROVENANCE, PROVENANCE_BY_FIELD]).join(
                    parent_rows, on=key, how="anti"
                )
                parent_rows = pl.concat(
                    [parent_rows, empty.select(key + [PROVENANCE])], how="vertical_relaxed"
                )
            tombstones = self._tombstones(spec, parent_rows, key)
            if tombstones is not None:  # rows written now replace their old version anyway
                ids = list(spec.id_columns)
                tombstones = tombstones.join(prepared.select(ids), on=ids, how="anti")
        self._merge_table(spec.key, spec.id_columns, prepared, tombstones)
        self._settle_attempts(spec, key, prepared.select(key).unique(), empty)
        return prepared.height

    def write_empty_parents(self, feature: str | FeatureSpec, parents: AnyFrame) -> int:
        """Record expansion parents that produced no child as done, without writing children.

        ``parents``: increment rows (resolve key, ``provenance``, ``provenance_by_field``). For
        writers that never see such a parent (a distributed sink whose tasks only get the
        children); ``write(..., parents=)`` does the same for a single writer. A parent with
        stored children of that provenance is left as it is; a failure record of a parent is
        replaced (it ran again and produced nothing). Returns how many parents were recorded."""
        spec = self.graph.feature(feature)
        if not self.graph.is_expansion(spec):
            raise SamplesError(
                f"write_empty_parents({spec.key!r}): only an expansion feature has parents."
            )
        given = parents.collect() if isinstance(parents, pl.LazyFrame) else parents
        key = list(self.graph.resolve_key(spec))
        columns = key + [PROVENANCE, PROVENANCE_BY_FIELD]
        self._check_key(spec, given, columns, "parents")
        empty = given.select(columns).unique(key, keep="first")
        children = self._scan(spec)
        if children is not None and empty.height:
            empty = (
                empty.lazy()
                .join(children.select(key + [PROVENANCE]), on=key + [PROVENANCE], how="anti")
                .collect()
            )
        if empty.height:
            self._settle_attempts(spec, key, empty.clear().select(key), empty)
        return empty.height

    def write_failed(
        self, feature: str | FeatureSpec, rows: AnyFrame, *, error: str | None = None
    ) -> int:
        """Record samples as failed (resolve key + ``provenance`` + an ``error`` column, or one
        ``error=`` text for all). They are not done: the next ``resolve_update`` returns them in
        ``failed`` until a success is written. A stored earlier result is kept as it is."""
        spec = self.graph.feature(feature)
        df = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
        key = list(self.graph.resolve_key(spec))
        self._check_key(spec, df, key + [PROVENANCE], "failed rows")
        if error is not None:
            df = df.with_columns(pl.lit(str(error)).alias(ERROR))
        elif ERROR not in df.columns:
            raise SamplesError(
                f"write_failed({spec.key!r}): the rows need an {ERROR!r} column (text), or pass "
                "error='why it failed'."
            )
        df = df.select(key + [PROVENANCE, pl.col(ERROR).cast(pl.String)]).unique(key, keep="first")
        if df.height == 0:
            return 0
        name = spec.key + ATTEMPTS_SUFFIX
        previous = self._scan_table(name)
        counts = (
            df.lazy()
            .join(
                previous.filter(pl.col(STATUS) == STATUS_FAILED).select(key + [FAILURES])
                if previous is not None
                else pl.LazyFrame(schema={**df.select(key).schema, FAILURES: pl.Int64}),
                on=key,
                how="left",
            )
            .select(
                key
                + [
                    PROVENANCE,
                    pl.lit(STATUS_FAILED).alias(STATUS),
                    pl.col(ERROR).alias(LAST_ERROR),
                    (pl.col(FAILURES).fill_null(0) + 1).cast(pl.Int64).alias(FAILURES),
                ]
            )
            .collect()
        )
        self._merge_table(name, key, counts, None)
        return counts.height

    def write_results(
        self,
        feature: str | FeatureSpec,
        rows: AnyFrame,
        *,
        error_column: str = ERROR,
        parents: AnyFrame | None = None,
    ) -> WriteSummary:
        """Write done rows and record failed ones: a non-null ``error_column`` means failed.

        For an expansion feature a failed row needs only the parent key (child ids may be null),
        and every row of a parent with an error is treated as failed."""
        spec = self.graph.feature(feature)
        df = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
        key = list(self.graph.resolve_key(spec))
        if error_column not in df.columns:
            return WriteSummary(self.write(spec, df, parents=parents), 0)
        bad = df.filter(pl.col(error_column).is_not_null())
        failed_keys = bad.select(key).unique()
        good = df.join(failed_keys, on=key, how="anti").drop(error_column)
        failed_rows = bad.select(key + [PROVENANCE, pl.col(error_column).alias(ERROR)])
        if parents is not None:
            parents = parents.lazy().join(failed_keys.lazy(), on=key, how="anti")
        written = (
            self.write(spec, good, parents=parents) if good.height or parents is not None else 0
        )
        failed = self.write_failed(spec, failed_rows) if failed_rows.height else 0
        ids = tuple(failed_keys.head(FAILED_IDS_SHOWN).to_dicts())
        return WriteSummary(written, failed, ids)

    def settled(self, feature: str | FeatureSpec, rows: AnyFrame) -> pl.DataFrame:
        """Of these increment rows (key + provenance), the ones now stored with that provenance,
        recorded as an empty parent, or recorded as failed: what a payload accounted for."""
        spec = self.graph.feature(feature)
        key = list(self.graph.resolve_key(spec))
        expected = rows.lazy().select(key + [PROVENANCE])
        parts = []
        stored = self._scan(spec)
        if stored is not None:
            parts.append(stored.select(key + [PROVENANCE]))
        attempts = self._attempts(spec)
        if attempts is not None:
            parts.append(attempts.select(key + [PROVENANCE]))
        if not parts:
            return expected.clear().collect()
        accounted = pl.concat(parts, how="vertical_relaxed").unique()
        return expected.join(accounted, on=key + [PROVENANCE], how="semi").collect()

    def delete(self, feature: str | FeatureSpec, ids: AnyFrame) -> int:
        """Delete samples by id (e.g. ``increment.orphaned``): nothing is deleted unless asked."""
        spec = self.graph.feature(feature)
        df = ids.collect() if isinstance(ids, pl.LazyFrame) else ids
        missing = [c for c in spec.id_columns if c not in df.columns]
        if missing:
            raise SamplesError(
                f"delete({spec.key!r}): the frame lacks id column(s) {missing}; "
                f"pass a frame with {list(spec.id_columns)} (e.g. increment.orphaned)."
            )
        if df.height == 0:
            return 0
        return self._delete_table(spec.key, spec.id_columns, df.select(spec.id_columns).unique())

    def resolve_update(
        self,
        feature: str | FeatureSpec,
        samples: AnyFrame | None = None,
        scope: pl.Expr | None = None,
        lazy: bool = False,
        *,
        filters: Sequence[pl.Expr] = (),
        target_filters: Sequence[pl.Expr] = (),
        stale_if: pl.Expr | None = None,
        skip_comparison: bool = False,
    ) -> Increment:
        """What to compute for ``feature``: ``Increment(new, stale, orphaned, failed)``.

        Root features take their provenance from ``samples`` (id columns + a
        ``provenance_by_field`` struct with a value per field, e.g. path and size). Downstream
        features are resolved from the stored data versions of their upstream features.
        ``filters`` apply to every upstream, ``target_filters`` (and ``scope``) to the target's
        resolve key on both sides, so a partial sample set does not report the rest orphaned.
        ``stale_if`` forces stored samples matching it to stale; ``skip_comparison`` returns
        every expected sample as new without reading the stored side (full backfills).
        See docs/incremental-v2.md.
        """
        spec = self.graph.feature(feature)
        key = list(self.graph.resolve_key(spec))
        targets = list(_as_filters(spec, filters=target_filters, scope=scope))
        expected = self._expected(spec, samples, _as_filters(spec, filters=filters))
        if targets:
            check_filter_columns(
                targets,
                expected.collect_schema(),
                spec.key,
                f"resolve_update({spec.key!r}) target filter",
            )
            expected = expected.filter(*targets)
        if skip_comparison:
            return compute_increment(spec, expected, None, lazy=lazy, key=key)
        table = self._scan(spec)  # opened once: the comparison, the structs and the orphans
        attempts = self._attempts(spec)
        stored = self._stored_for_compare(spec, key, stale_if, table, attempts)
        if stored is not None and targets:
            stored = stored.filter(*targets)
        failures = None
        if attempts is not None:
            failures = attempts.filter(pl.col(STATUS) == STATUS_FAILED)
        increment = compute_increment(
            spec,
            expected,
            stored,
            lazy=lazy,
            key=key,
            failures=failures,
            stored_fields=self._parent_fields(spec, key, table, attempts),
        )
        if self.graph.is_expansion(spec) and table is not None:
            increment = self._orphaned_children(spec, key, table, increment, lazy)
        return increment

    @staticmethod
    def _orphaned_children(
        spec: FeatureSpec, key: list[str], table: pl.LazyFrame, increment: Increment, lazy: bool
    ) -> Increment:
        """An expansion's orphaned parents -> their stored children (no scan when none)."""
        columns = [*spec.id_columns, PROVENANCE]
        if lazy or increment.orphaned.height:
            orphaned = table.select(columns).join(
                increment.orphaned.lazy().select(key), on=key, how="semi"
            )
            if not lazy:
                orphaned = orphaned.collect()
        else:
            schema = table.collect_schema()
            orphaned = pl.DataFrame(schema={c: schema[c] for c in columns})
        return Increment(increment.new, increment.stale, orphaned, increment.failed)

    def load_upstream(
        self, feature: str | FeatureSpec, samples: AnyFrame, *, qualify: bool = False
    ) -> pl.DataFrame:
        """The user columns of the upstream features for these samples (what a payload reads).

        Joined on each dependency's lineage key: an aggregation gives every member row of each
        group, an expansion its parent's columns. Two upstreams with a column of the same name
        are refused unless ``qualify=True``, which names every upstream column
        ``<feature key with / as __>__<column>``.
        """
        spec = self.graph.feature(feature)
        key = list(self.graph.resolve_key(spec))
        lf = (
            (samples.lazy() if isinstance(samples, pl.DataFrame) else samples)
            .select(key)
            .unique(maintain_order=True)
        )
        owner: dict[str, str] = {c: spec.key for c in key}
        for dep in spec.feature_deps:
            up = self.graph[dep.feature]
            up_lf = self._scan(up)
            if up_lf is None:
                if dep.optional:
                    continue
                raise SamplesError(
                    f"load_upstream({spec.key!r}): upstream {up.key!r} was never written."
                )
            cols = [
                c
                for c in up_lf.collect_schema().names()
                if c not in key and c not in RESERVED_COLUMNS and not c.startswith("__")
            ]
            if qualify:
                prefix = up.key.replace("/", "__") + "__"
                up_lf = up_lf.rename({c: prefix + c for c in cols})
                cols = [prefix + c for c in cols]
            clash = sorted(c for c in cols if c in owner)
            if clash:
                raise SamplesError(
                    f"load_upstream({spec.key!r}): column(s) {clash} are in both "
                    f"{owner[clash[0]]!r} and {up.key!r}; rename one, or pass qualify=True "
                    "to get them as '<feature>__<column>'."
                )
            owner.update({c: up.key for c in cols})
            how = "left"
            lf = lf.join(up_lf.select(key + cols), on=key, how=how)
        return lf.collect()

    # Internals --------------------------------------------------------------------------------
    def _expected(
        self, spec: FeatureSpec, samples: AnyFrame | None, filters: Sequence[pl.Expr]
    ) -> pl.LazyFrame:
        if spec.is_root:
            if samples is None:
                raise SamplesError(
                    f"resolve_update({spec.key!r}): a root feature takes its provenance from "
                    "samples=: pass a frame with its id columns and a 'provenance_by_field' "
                    f"struct holding a value for each field {list(spec.field_keys)}."
                )
            lf = self._check_samples(spec, samples)
            if filters:
                check_filter_columns(
                    filters, lf.collect_schema(), spec.key, f"resolve_update({spec.key!r}) filters"
                )
                lf = lf.filter(*filters)
            return with_provenance(lf, spec, root_provenance_exprs(spec))
        if samples is not None:
            raise SamplesError(
                f"resolve_update({spec.key!r}): samples= is for root features; a downstream "
                "feature is resolved from its upstream features. Use scope= to limit it."
            )
        return downstream_expected(self.graph, spec, self._scan, filters)

    def _stored_for_compare(
        self,
        spec: FeatureSpec,
        key: list[str],
        stale_if: pl.Expr | None,
        stored: pl.LazyFrame | None,
        attempts: pl.LazyFrame | None,
    ) -> pl.LazyFrame | None:
        """key + provenance + per-field structs (+ the predicate's verdict) of the stored
        table; per parent for an expansion (its children share the parent's provenance), with
        its empty parents (from the ``attempts`` table)."""
        if stored is None:
            if self.graph.is_expansion(spec):  # only empty parents so far, if any
                columns = key + [PROVENANCE, PROVENANCE_BY_FIELD, CODE_VERSION_BY_FIELD]
                empties = _empty_parents(attempts, columns)
                if empties is not None and stale_if is not None:
                    empties = empties.with_columns(pl.lit(False).alias(FORCED_STALE))
                return empties
            return None
        extra = []
        if stale_if is not None:
            if not isinstance(stale_if, pl.Expr):
                raise SamplesError(
                    f"resolve_update({spec.key!r}): stale_if must be a polars expression, "
                    f"got {type(stale_if).__name__}."
                )
            check_filter_columns(
                [stale_if],
                stored.collect_schema(),
                spec.key,
                f"resolve_update({spec.key!r}) stale_if",
            )
            extra = [stale_if.alias(FORCED_STALE)]
        columns = key + [PROVENANCE, PROVENANCE_BY_FIELD, CODE_VERSION_BY_FIELD]
        stored = stored.select(columns + extra)
        if not self.graph.is_expansion(spec):
            return stored
        aggs = [pl.col(c).first() for c in columns if c not in key]
        if extra:
            aggs.append(pl.col(FORCED_STALE).any())
        stored = stored.group_by(key).agg(aggs)
        empties = _empty_parents(attempts, columns)
        if empties is None:
            return stored
        empties = empties.join(stored.select(key), on=key, how="anti")
        if extra:
            empties = empties.with_columns(pl.lit(False).alias(FORCED_STALE))
        return pl.concat([stored, empties], how="vertical_relaxed")

    def _parent_fields(
        self,
        spec: FeatureSpec,
        key: list[str],
        children: pl.LazyFrame | None,
        attempts: pl.LazyFrame | None,
    ):
        """For an expansion: the stored structs of some parents, from their children only.

        Looked up by the parents' STORED provenance, not by their key: every child of a parent
        carries the parent's provenance, and one provenance implies one set of per-field
        provenances and code versions (both are hashed into it). So the children are filtered
        on one integer column and reduced to one row per distinct provenance, instead of
        joining a million child rows on a text key."""
        if children is None or not self.graph.is_expansion(spec):
            return None
        columns = [PROVENANCE_BY_FIELD, CODE_VERSION_BY_FIELD]

        def fields(keys: AnyFrame) -> pl.LazyFrame:
            picked = children.select([PROVENANCE, *columns])
            if isinstance(keys, pl.DataFrame):  # eager: filter on the values (cheaper than a join)
                wanted = keys.get_column(PROVENANCE).unique().implode()
                picked = picked.filter(pl.col(PROVENANCE).is_in(wanted))
            else:
                picked = picked.join(keys.select(PROVENANCE).unique(), on=PROVENANCE, how="semi")
            by_provenance = picked.unique(PROVENANCE, keep="any")
            keys = keys.lazy()
            from_children = keys.join(by_provenance, on=PROVENANCE, how="inner").select(
                key + columns
            )
            empties = _empty_parents(attempts, key + columns)
            if empties is None:
                return from_children
            rest = empties.join(keys.select(key), on=key, how="semi")
            return pl.concat([from_children, rest], how="vertical_relaxed").unique(
                key, keep="first"
            )

        return fields

    def _tombstones(
        self, spec: FeatureSpec, parent_rows: pl.DataFrame, key: list[str]
    ) -> pl.DataFrame | None:
        """Stored children of these parents with another provenance (the previous version)."""
        stored = self._scan(spec)
        if stored is None or parent_rows.height == 0:
            return None
        return (
            stored.select([*spec.id_columns, PROVENANCE])
            .join(parent_rows.lazy().rename({PROVENANCE: "__new"}), on=key, how="inner")
            .filter(pl.col(PROVENANCE) != pl.col("__new"))
            .select(spec.id_columns)
            .collect()
        )

    def _settle_attempts(
        self, spec: FeatureSpec, key: list[str], done: pl.DataFrame, empty: pl.DataFrame | None
    ) -> None:
        """After a successful write: clear the failure records of the written samples; record
        empty parents (an expansion parent that produced no child is done)."""
        name = spec.key + ATTEMPTS_SUFFIX
        if empty is not None and empty.height:
            self._merge_table(
                name,
                key,
                empty.select(
                    key
                    + [
                        PROVENANCE,
                        PROVENANCE_BY_FIELD,
                        pl.struct(pl.lit(f.code_version).alias(f.key) for f in spec.fields).alias(
                            CODE_VERSION_BY_FIELD
                        ),
                        pl.lit(STATUS_EMPTY).alias(STATUS),
                        pl.lit(None, dtype=pl.String).alias(LAST_ERROR),
                        pl.lit(0, dtype=pl.Int64).alias(FAILURES),
                    ]
                ),
                None,
            )
        if done.height and self._scan_table(name) is not None:
            self._delete_table(name, key, done)

    @staticmethod
    def _check_key(spec: FeatureSpec, df: pl.DataFrame, columns: list[str], what: str) -> None:
        if not isinstance(df, pl.DataFrame):
            raise SamplesError(
                f"{spec.key!r}: {what} must be a polars frame, got {type(df).__name__}."
            )
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise SamplesError(
                f"{spec.key!r}: {what} lack column(s) {missing}; pass the increment's rows "
                f"({columns}) for the samples concerned."
            )

    @staticmethod
    def _check_samples(spec: FeatureSpec, samples: AnyFrame) -> pl.LazyFrame:
        if not isinstance(samples, pl.DataFrame | pl.LazyFrame):
            raise SamplesError(
                f"resolve_update({spec.key!r}): samples must be a polars DataFrame or LazyFrame, "
                f"got {type(samples).__name__}."
            )
        lf = samples.lazy() if isinstance(samples, pl.DataFrame) else samples
        schema = lf.collect_schema()
        missing = [c for c in spec.id_columns if c not in schema]
        if missing:
            raise SamplesError(
                f"resolve_update({spec.key!r}): samples lack id column(s) {missing} "
                f"(columns: {schema.names()})."
            )
        dtype = schema.get(PROVENANCE_BY_FIELD)
        if not isinstance(dtype, pl.Struct):
            raise SamplesError(
                f"resolve_update({spec.key!r}): samples need a '{PROVENANCE_BY_FIELD}' struct "
                f"column with a value per field {list(spec.field_keys)}, e.g. "
                "pl.struct(file_uri=..., value=..., category=...).alias('provenance_by_field')."
            )
        absent = [k for k in spec.field_keys if k not in {f.name for f in dtype.fields}]
        if absent:
            raise SamplesError(
                f"resolve_update({spec.key!r}): '{PROVENANCE_BY_FIELD}' lacks field(s) {absent}."
            )
        if isinstance(samples, pl.DataFrame):
            _check_ids(spec, samples, "samples")
        return lf

    @staticmethod
    def _check_rows(spec: FeatureSpec, df: pl.DataFrame) -> None:
        if not isinstance(df, pl.DataFrame):
            raise SamplesError(
                f"write({spec.key!r}): expected a polars frame, got {type(df).__name__}."
            )
        missing = [
            c for c in [*spec.id_columns, PROVENANCE_BY_FIELD, PROVENANCE] if c not in df.columns
        ]
        if missing:
            raise SamplesError(
                f"write({spec.key!r}): the rows lack column(s) {missing}. Write the frames that "
                "resolve_update returned (increment.new / increment.stale) with your columns added."
            )
        _check_ids(spec, df, "rows")


def _empty_parents(attempts: pl.LazyFrame | None, columns: list[str]) -> pl.LazyFrame | None:
    """Expansion parents recorded as done with no child (``columns`` of their records)."""
    if attempts is None or PROVENANCE_BY_FIELD not in attempts.collect_schema():
        return None  # no empty parent was ever recorded
    return attempts.filter(pl.col(STATUS) == STATUS_EMPTY).select(columns)


def _check_ids(spec: FeatureSpec, df: pl.DataFrame, what: str) -> None:
    ids = list(spec.id_columns)
    nulls = df.select(pl.any_horizontal(pl.col(ids).is_null()).any()).item()
    if nulls:
        raise SamplesError(
            f"{spec.key!r}: {what} have null id values in {ids}; every sample needs an id."
        )
    if df.select(ids).is_duplicated().any():
        dupes = df.filter(df.select(ids).is_duplicated()).select(ids).unique().head(5)
        raise SamplesError(
            f"{spec.key!r}: {what} have duplicate ids in {ids}, e.g. {dupes.to_dicts()}. "
            "Each sample must appear once."
        )


def _as_filters(
    spec: FeatureSpec, *, filters: Sequence[pl.Expr] | pl.Expr, scope: pl.Expr | None = None
) -> tuple[pl.Expr, ...]:
    items = [filters] if isinstance(filters, pl.Expr) else list(filters or ())
    if scope is not None:
        if not isinstance(scope, pl.Expr):
            raise SamplesError(
                f"resolve_update({spec.key!r}): scope must be a polars expression "
                f"(e.g. pl.col('sample_uid').is_in([...])), got {type(scope).__name__}."
            )
        items.append(scope)
    for item in items:
        if not isinstance(item, pl.Expr):
            raise SamplesError(
                f"resolve_update({spec.key!r}): filters must be polars expressions, "
                f"got {type(item).__name__}."
            )
    return tuple(items)
