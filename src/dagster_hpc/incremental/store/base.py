"""The store interface and everything that does not depend on where tables live.

A store holds, per feature, the CURRENT state: one row per sample with its id columns, the
user's columns, ``provenance_by_field``/``provenance``, ``data_version_by_field``/
``data_version`` and ``code_version_by_field``. Writes are upserts on the id columns, so reading
the current state never replays history.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import polars as pl

from dagster_hpc.incremental.errors import SamplesError
from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    RESERVED_COLUMNS,
    FeatureSpec,
)
from dagster_hpc.incremental.graph import FeatureGraph, FieldRef
from dagster_hpc.incremental.provenance import (
    field_provenance_exprs,
    root_provenance_exprs,
    with_provenance,
    with_versions,
)
from dagster_hpc.incremental.resolve import Increment, compute_increment

AnyFrame = pl.DataFrame | pl.LazyFrame


def _input_column(ref: FieldRef) -> str:
    return f"__in__{ref[0]}__{ref[1]}"


class MetadataStore(ABC):
    """Per-feature current state + ``resolve_update``. Subclasses implement three primitives."""

    def __init__(self, graph: FeatureGraph):
        if not isinstance(graph, FeatureGraph):
            raise TypeError(f"a store needs a FeatureGraph, got {type(graph).__name__}")
        self.graph = graph

    # Primitives -------------------------------------------------------------------------------
    @abstractmethod
    def _scan(self, feature: FeatureSpec) -> pl.LazyFrame | None:
        """The current state of a feature, or None when nothing was ever written."""

    @abstractmethod
    def _upsert(self, feature: FeatureSpec, rows: pl.DataFrame) -> None:
        """Insert or replace rows by id columns, atomically."""

    @abstractmethod
    def _delete(self, feature: FeatureSpec, ids: pl.DataFrame) -> int:
        """Delete the rows with these ids; return how many were deleted."""

    # Public API -------------------------------------------------------------------------------
    def read(self, feature: str | FeatureSpec, *, lazy: bool = False) -> AnyFrame:
        """The current state of a feature (empty frame with the id columns if never written)."""
        spec = self.graph.feature(feature)
        lf = self._scan(spec)
        if lf is None:
            lf = pl.LazyFrame(schema={c: pl.String for c in spec.id_columns})
        return lf if lazy else lf.collect()

    def write(self, feature: str | FeatureSpec, rows: AnyFrame) -> int:
        """Upsert computed samples: the frames of ``resolve_update`` with your columns added.

        Set a ``data_version_by_field`` struct (e.g. a content hash per field) to override the
        data version; downstream fields then stay up to date when that value did not change.
        """
        spec = self.graph.feature(feature)
        df = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
        self._check_rows(spec, df)
        if df.height == 0:
            return 0
        drop = [c for c in (DATA_VERSION, CODE_VERSION_BY_FIELD) if c in df.columns]
        drop += [c for c in df.columns if c.startswith("__")]
        prepared = with_versions(df.drop(drop), spec)
        self._upsert(spec, prepared)
        return prepared.height

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
        return self._delete(spec, df.select(spec.id_columns).unique())

    def resolve_update(
        self,
        feature: str | FeatureSpec,
        samples: AnyFrame | None = None,
        scope: pl.Expr | None = None,
        lazy: bool = False,
    ) -> Increment:
        """What to compute for ``feature``: ``Increment(new, stale, orphaned)``.

        Root features take their provenance from ``samples`` (id columns + a
        ``provenance_by_field`` struct with a value per field, e.g. path and size). Downstream
        features are resolved from the stored data versions of their upstream features.
        ``scope`` (a filter on id columns) limits both sides, so a partial sample set does not
        report everything else as orphaned.
        """
        spec = self.graph.feature(feature)
        expected = self._expected(spec, samples)
        stored = self._scan(spec)
        if scope is not None:
            if not isinstance(scope, pl.Expr):
                raise SamplesError(
                    f"resolve_update({spec.key!r}): scope must be a polars expression "
                    f"(e.g. pl.col('sample_uid').is_in([...])), got {type(scope).__name__}."
                )
            expected = expected.filter(scope)
            stored = stored.filter(scope) if stored is not None else None
        return compute_increment(spec, expected, stored, lazy=lazy)

    def load_upstream(self, feature: str | FeatureSpec, samples: AnyFrame) -> pl.DataFrame:
        """The user columns of the upstream features for these samples (what a payload reads)."""
        spec = self.graph.feature(feature)
        ids = list(spec.id_columns)
        lf = (samples.lazy() if isinstance(samples, pl.DataFrame) else samples).select(ids)
        seen = set(ids)
        for up in self.graph.upstream(spec):
            up_lf = self._scan(up)
            if up_lf is None:
                raise SamplesError(
                    f"load_upstream({spec.key!r}): upstream {up.key!r} was never written."
                )
            cols = [
                c
                for c in up_lf.collect_schema().names()
                if c not in seen and c not in RESERVED_COLUMNS and not c.startswith("__")
            ]
            seen.update(cols)
            lf = lf.join(up_lf.select(ids + cols), on=ids, how="left")
        return lf.collect()

    # Internals --------------------------------------------------------------------------------
    def _expected(self, spec: FeatureSpec, samples: AnyFrame | None) -> pl.LazyFrame:
        if spec.is_root:
            if samples is None:
                raise SamplesError(
                    f"resolve_update({spec.key!r}): a root feature takes its provenance from "
                    "samples=: pass a frame with its id columns and a 'provenance_by_field' "
                    f"struct holding a value for each field {list(spec.field_keys)}."
                )
            lf = self._check_samples(spec, samples)
            return with_provenance(lf, spec, root_provenance_exprs(spec))
        if samples is not None:
            raise SamplesError(
                f"resolve_update({spec.key!r}): samples= is for root features; a downstream "
                "feature is resolved from its upstream features. Use scope= to limit it."
            )
        ids = list(spec.id_columns)
        inputs = self.graph.field_inputs(spec)
        refs = self.graph.upstream_fields(spec)
        joined: pl.LazyFrame | None = None
        for up in self.graph.upstream(spec):
            up_lf = self._scan(up)
            if up_lf is None:
                # Nothing upstream yet: nothing can be computed downstream.
                return pl.LazyFrame(schema={c: pl.String for c in ids}).pipe(
                    with_provenance,
                    spec,
                    {k: pl.lit(None, dtype=pl.Int64) for k in spec.field_keys},
                )
            wanted = [r for r in refs if r[0] == up.key]
            part = up_lf.select(
                ids
                + [
                    pl.col(DATA_VERSION_BY_FIELD).struct.field(name).alias(_input_column(r))
                    for r in wanted
                    for name in [r[1]]
                ]
            )
            joined = part if joined is None else joined.join(part, on=ids, how="inner")
        assert joined is not None  # a downstream feature has at least one upstream
        lf = with_provenance(joined, spec, field_provenance_exprs(spec, inputs, _input_column))
        return lf.select(ids + [PROVENANCE_BY_FIELD, PROVENANCE])

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
