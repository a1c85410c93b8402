"""Compare expected provenance with what is stored: ``Increment(new, stale, orphaned)``.

Pure frame logic (no I/O): the store builds the two lazy frames, this module joins them.
Beyond new/stale/orphaned (metaxy's semantics), every stale sample says WHICH fields made it
stale and whether because their code version changed or because their input data changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import polars as pl

from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    FeatureSpec,
)

STALE_FIELDS = "stale_fields"
CODE_CHANGED_FIELDS = "code_changed_fields"
DATA_CHANGED_FIELDS = "data_changed_fields"
STALE_REASON = "stale_reason"
# Values of STALE_REASON.
REASON_CODE = "code_changed"
REASON_DATA = "data_changed"
REASON_BOTH = "code_and_data_changed"
REASON_PREDICATE = "predicate"
REASON_FAILED = "failed_last_time"
# Columns of increment.failed (and of the store's failure records).
LAST_ERROR = "last_error"
FAILURES = "failures"
# A boolean column a store may add to the stored frame: the staleness predicate's verdict.
FORCED_STALE = "__forced_stale"

_STORED = "__stored_"
_STORED_MARK = "__in_stored"
_EXPECTED_MARK = "__in_expected"
_FORCED = "__forced"
_STALE_COLUMNS = [STALE_FIELDS, CODE_CHANGED_FIELDS, DATA_CHANGED_FIELDS, STALE_REASON]

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class Increment(Generic[Frame]):
    """What to (re)compute for a feature.

    new: expected samples not stored yet. stale: stored, but the expected provenance differs
    (with ``stale_fields``, ``code_changed_fields``, ``data_changed_fields``, ``stale_reason``).
    orphaned: stored, but no longer expected (kept until deleted; see the store's delete).
    failed: expected samples whose last attempt failed (``last_error``, ``failures``); they are
    not repeated in new or stale. For an expansion feature new / stale / failed hold one row per
    parent and orphaned holds the stored children.
    """

    new: Frame
    stale: Frame
    orphaned: Frame
    failed: Frame

    def collect(self) -> Increment[pl.DataFrame]:
        """Materialise a lazy increment in one pass (shared scans are computed once)."""
        frames = [self.new, self.stale, self.orphaned, self.failed]
        if all(isinstance(f, pl.DataFrame) for f in frames):
            return self  # type: ignore[return-value]
        new, stale, orphaned, failed = pl.collect_all([f.lazy() for f in frames])
        return Increment(new=new, stale=stale, orphaned=orphaned, failed=failed)

    def counts(self) -> dict[str, int]:
        inc = self.collect()
        return {
            "new": inc.new.height,
            "stale": inc.stale.height,
            "orphaned": inc.orphaned.height,
            "failed": inc.failed.height,
        }

    def to_process(self) -> pl.DataFrame:
        """New, stale and failed samples in one frame, the columns they share (what to compute)."""
        inc = self.collect()
        frames = [inc.new, inc.stale, inc.failed]
        common = [c for c in inc.new.columns if all(c in f.columns for f in frames)]
        return pl.concat([f.select(common) for f in frames], how="vertical_relaxed")

    @property
    def is_empty(self) -> bool:
        counts = self.counts()
        return counts["new"] == 0 and counts["stale"] == 0 and counts["failed"] == 0


def _field_or_null(struct_col: str, key: str, present: set[str]) -> pl.Expr:
    # A field added to the feature after the sample was stored has no stored value: null.
    if key in present:
        return pl.col(struct_col).struct.field(key)
    return pl.lit(None)


def _struct_fields(schema: pl.Schema, name: str) -> set[str]:
    dtype = schema.get(name)
    return {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()


def _name_list(flags: dict[str, pl.Expr]) -> pl.Expr:
    if not flags:
        return pl.lit([], dtype=pl.List(pl.String))
    items = [pl.when(flag).then(pl.lit(key)) for key, flag in flags.items()]
    return pl.concat_list(items).list.drop_nulls()


def compute_increment(
    feature: FeatureSpec,
    expected: pl.LazyFrame,
    stored: pl.LazyFrame | None,
    lazy: bool = False,
    *,
    key: Sequence[str] | None = None,
    failures: pl.LazyFrame | None = None,
    stored_fields: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
) -> Increment:
    """Join expected (key, provenance, provenance_by_field, any extra columns) with stored state.

    One full outer join on the key classifies every sample (new / stale / orphaned / up to
    date); in eager mode it is computed once and the frames are filtered from it. ``stored``
    may carry a boolean ``FORCED_STALE`` column (a staleness predicate's result). ``failures``
    (key, ``last_error``, ``failures``) moves samples still to do into ``failed``.
    ``stored_fields(keys)`` gives the stored per-field structs of those keys only (default: a
    join with ``stored``); an expansion uses it to avoid grouping every child's structs.
    """
    ids = list(key or feature.id_columns)
    if stored is None:
        stale = _annotate_stale(feature, expected.clear(), pl.Schema())
        orphaned = (
            expected.select(ids)
            .clear()
            .with_columns(pl.lit(None, dtype=pl.Int64).alias(PROVENANCE))
        )
        return _with_failed(
            Increment(expected, stale, orphaned, expected.clear()), ids, failures, lazy
        )
    stored_schema = stored.collect_schema()
    columns = expected.collect_schema().names()
    forced = pl.col(FORCED_STALE) if FORCED_STALE in stored_schema else pl.lit(False)
    # Classify on (ids, provenance) only; the per-field structs are fetched for stale rows alone.
    stored_keys = stored.select(
        ids
        + [
            pl.col(PROVENANCE).alias(_STORED + PROVENANCE),
            pl.lit(True).alias(_STORED_MARK),
            forced.fill_null(False).alias(_FORCED),
        ]
    )
    joined = expected.with_columns(pl.lit(True).alias(_EXPECTED_MARK)).join(
        stored_keys, on=ids, how="full", coalesce=True
    )
    if not lazy:
        joined = joined.collect().lazy()
    in_expected = pl.col(_EXPECTED_MARK).is_not_null()
    in_stored = pl.col(_STORED_MARK).is_not_null()
    new = joined.filter(in_expected & ~in_stored).select(columns)
    orphaned = joined.filter(~in_expected).select(
        ids + [pl.col(_STORED + PROVENANCE).alias(PROVENANCE)]
    )
    both = joined.filter(
        in_expected
        & in_stored
        & ((pl.col(PROVENANCE) != pl.col(_STORED + PROVENANCE)) | pl.col(_FORCED))
    ).select(columns + [_FORCED])
    if not lazy:
        both = both.collect().lazy()
    renamed = [
        pl.col(PROVENANCE_BY_FIELD).alias(_STORED + PROVENANCE_BY_FIELD),
        pl.col(CODE_VERSION_BY_FIELD).alias(_STORED + CODE_VERSION_BY_FIELD),
    ]
    if lazy or both.select(pl.len()).collect().item():
        if stored_fields is None:
            fields = stored.select(ids + renamed)
        else:
            fields = stored_fields(both.select(ids)).select(ids + renamed)
        with_stored = both.join(fields, on=ids, how="left")
    else:  # nothing stale: do not read the stored structs at all
        with_stored = both.join(stored.select(ids + renamed).clear(), on=ids, how="left")
    stale = _annotate_stale(feature, with_stored, stored_schema).select(columns + _STALE_COLUMNS)
    return _with_failed(Increment(new, stale, orphaned, new.clear()), ids, failures, lazy)


def _with_failed(
    increment: Increment, ids: list[str], failures: pl.LazyFrame | None, lazy: bool
) -> Increment:
    """Move samples with a failure record from new / stale to failed (reason failed_last_time)."""
    if failures is None:
        failed = (
            increment.new.lazy()
            .clear()
            .with_columns(
                pl.lit(None, dtype=pl.String).alias(LAST_ERROR),
                pl.lit(None, dtype=pl.Int64).alias(FAILURES),
                pl.lit(None, dtype=pl.String).alias(STALE_REASON),
            )
        )
        inc = Increment(increment.new, increment.stale, increment.orphaned, failed)
        return inc if lazy else inc.collect()
    records = failures.select(ids + [LAST_ERROR, FAILURES])
    new, stale = increment.new.lazy(), increment.stale.lazy()
    columns = new.collect_schema().names()
    todo = pl.concat([new.select(columns), stale.select(columns)], how="vertical_relaxed")
    failed = todo.join(records, on=ids, how="inner").with_columns(
        pl.lit(REASON_FAILED).alias(STALE_REASON)
    )
    inc = Increment(
        new=new.join(records, on=ids, how="anti"),
        stale=stale.join(records, on=ids, how="anti"),
        orphaned=increment.orphaned.lazy(),
        failed=failed,
    )
    return inc if lazy else inc.collect()


def _annotate_stale(
    feature: FeatureSpec, both: pl.LazyFrame, stored_schema: pl.Schema
) -> pl.LazyFrame:
    prov_fields = _struct_fields(stored_schema, PROVENANCE_BY_FIELD)
    code_fields = _struct_fields(stored_schema, CODE_VERSION_BY_FIELD)
    changed: dict[str, pl.Expr] = {}
    code: dict[str, pl.Expr] = {}
    data: dict[str, pl.Expr] = {}
    forced = pl.col(_FORCED) if _FORCED in both.collect_schema() else pl.lit(False)
    for key in feature.field_keys:
        if not stored_schema:
            changed[key] = code[key] = data[key] = pl.lit(False)
            continue
        expected_prov = pl.col(PROVENANCE_BY_FIELD).struct.field(key)
        stored_prov = _field_or_null(_STORED + PROVENANCE_BY_FIELD, key, prov_fields)
        stored_code = _field_or_null(_STORED + CODE_VERSION_BY_FIELD, key, code_fields)
        is_changed = expected_prov.ne_missing(stored_prov)
        code_moved = stored_code.ne_missing(pl.lit(feature.field(key).code_version))
        # A staleness predicate makes every field stale, without a code or data reason.
        changed[key] = is_changed | forced
        code[key] = is_changed & code_moved
        data[key] = is_changed & ~code_moved
    any_code = pl.any_horizontal(list(code.values()))
    any_data = pl.any_horizontal(list(data.values()))
    return both.with_columns(
        _name_list(changed).alias(STALE_FIELDS),
        _name_list(code).alias(CODE_CHANGED_FIELDS),
        _name_list(data).alias(DATA_CHANGED_FIELDS),
        pl.when(~any_code & ~any_data & forced)
        .then(pl.lit(REASON_PREDICATE))
        .when(any_code & any_data)
        .then(pl.lit(REASON_BOTH))
        .when(any_code)
        .then(pl.lit(REASON_CODE))
        .otherwise(pl.lit(REASON_DATA))
        .alias(STALE_REASON),
    )
