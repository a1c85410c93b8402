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
AnyFrame = pl.DataFrame | pl.LazyFrame


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
    stored_fields: Callable[[AnyFrame], pl.LazyFrame] | None = None,
) -> Increment:
    """Join expected (key, provenance, provenance_by_field, any extra columns) with stored state.

    One full outer join on the key classifies every sample (new / stale / orphaned / up to
    date); in eager mode it is computed once and the frames are filtered from it. ``stored``
    may carry a boolean ``FORCED_STALE`` column (a staleness predicate's result). ``failures``
    (key, ``last_error``, ``failures``) moves samples still to do into ``failed``.
    ``stored_fields(keys)`` gives the stored per-field structs of those keys only (``keys``:
    the stale rows' key and STORED ``provenance``, a DataFrame in eager mode; default: a join with ``stored``); an
    expansion uses it to avoid grouping every child's structs.
    """
    ids = list(key or feature.id_columns)
    if stored is None:
        return _with_failed(*_nothing_stored(expected, ids, lazy), ids, failures, lazy)
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
    joined: pl.DataFrame | pl.LazyFrame = expected.with_columns(
        pl.lit(True).alias(_EXPECTED_MARK)
    ).join(stored_keys, on=ids, how="full", coalesce=True)
    if not lazy:  # one pass; the frames below are cheap eager filters of it
        joined = joined.collect()
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
    ).select(columns + [_FORCED, _STORED + PROVENANCE])
    if not lazy and both.height == 0:  # nothing stale: do not read the stored structs at all
        stale: pl.DataFrame | pl.LazyFrame = _empty_stale(new.collect_schema())
    else:
        renamed = [pl.col(CODE_VERSION_BY_FIELD).alias(_STORED + CODE_VERSION_BY_FIELD)]
        if not _one_field(feature, stored_schema):  # else the sample provenance tells it
            renamed.append(pl.col(PROVENANCE_BY_FIELD).alias(_STORED + PROVENANCE_BY_FIELD))
        if stored_fields is None:
            fields = stored.select(ids + renamed)
            if not lazy:  # the stale rows' stored provenances: an integer filter before the join
                wanted = both.get_column(_STORED + PROVENANCE).unique().implode()
                fields = stored.filter(pl.col(PROVENANCE).is_in(wanted)).select(ids + renamed)
        else:
            keys = both.select(ids + [pl.col(_STORED + PROVENANCE).alias(PROVENANCE)])
            fields = stored_fields(keys).select(ids + renamed)
        with_stored = both.lazy().join(fields, on=ids, how="left")
        stale = _annotate_stale(feature, with_stored, stored_schema).select(
            columns + _STALE_COLUMNS
        )
        if not lazy:
            stale = stale.collect()
    return _with_failed(new, stale, orphaned, ids, failures, lazy)


def _stale_schema() -> dict[str, pl.DataType]:
    listed = pl.List(pl.String)
    return {
        STALE_FIELDS: listed,
        CODE_CHANGED_FIELDS: listed,
        DATA_CHANGED_FIELDS: listed,
        STALE_REASON: pl.String(),
    }


def _empty_stale(schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(schema={**dict(schema), **_stale_schema()})


def _nothing_stored(expected: pl.LazyFrame, ids: list[str], lazy: bool) -> tuple[AnyFrame, ...]:
    """(new, stale, orphaned) when nothing is stored: every expected sample is new, the other
    two are empty frames built from the schema alone (no second pass over the plan)."""
    new: AnyFrame = expected if lazy else expected.collect()
    schema = new.collect_schema()
    stale = _empty_stale(schema)
    orphaned = pl.DataFrame(schema={**{c: schema[c] for c in ids}, PROVENANCE: pl.Int64()})
    if lazy:
        return new, stale.lazy(), orphaned.lazy()
    return new, stale, orphaned


def _with_failed(
    new: AnyFrame,
    stale: AnyFrame,
    orphaned: AnyFrame,
    ids: list[str],
    failures: pl.LazyFrame | None,
    lazy: bool,
) -> Increment:
    """Move samples with a failure record from new / stale to failed (reason failed_last_time)."""
    if failures is None:
        failed = pl.DataFrame(
            schema={
                **dict(new.collect_schema()),
                LAST_ERROR: pl.String(),
                FAILURES: pl.Int64(),
                STALE_REASON: pl.String(),
            }
        )
        inc = Increment(new, stale, orphaned, failed.lazy() if lazy else failed)
        return inc if lazy else inc.collect()
    records = failures.select(ids + [LAST_ERROR, FAILURES])
    new, stale = new.lazy(), stale.lazy()
    columns = new.collect_schema().names()
    todo = pl.concat([new.select(columns), stale.select(columns)], how="vertical_relaxed")
    failed = todo.join(records, on=ids, how="inner").with_columns(
        pl.lit(REASON_FAILED).alias(STALE_REASON)
    )
    inc = Increment(
        new=new.join(records, on=ids, how="anti"),
        stale=stale.join(records, on=ids, how="anti"),
        orphaned=orphaned.lazy(),
        failed=failed,
    )
    return inc if lazy else inc.collect()


def _one_field(feature: FeatureSpec, stored_schema: pl.Schema) -> bool:
    """A feature of one field, stored with that field only: its field provenance changed
    exactly when its sample provenance did (the one is a hash of the other), so the stored
    per-field provenance need not be read."""
    keys = set(feature.field_keys)
    return len(keys) == 1 and _struct_fields(stored_schema, PROVENANCE_BY_FIELD) == keys


def _annotate_stale(
    feature: FeatureSpec, both: pl.LazyFrame, stored_schema: pl.Schema
) -> pl.LazyFrame:
    one_field = _one_field(feature, stored_schema)
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
        if one_field:
            is_changed = pl.col(PROVENANCE).ne_missing(pl.col(_STORED + PROVENANCE))
        else:
            stored_prov = _field_or_null(_STORED + PROVENANCE_BY_FIELD, key, prov_fields)
            is_changed = pl.col(PROVENANCE_BY_FIELD).struct.field(key).ne_missing(stored_prov)
        stored_code = _field_or_null(_STORED + CODE_VERSION_BY_FIELD, key, code_fields)
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
