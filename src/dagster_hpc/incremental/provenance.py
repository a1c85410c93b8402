"""Provenance and data versions, computed with vectorised polars expressions (no per-sample Python).

Hash decision (recorded in every stored table as ``HASH_ALGORITHM``):
polars' own ``Expr.hash`` is seeded and documented as unstable across polars versions, so a
polars upgrade would silently mark every sample stale (or worse, collide with old values). We use
xxh3-64 from the ``polars-hash`` plugin instead: a published algorithm (test vectors pinned in
the unit tests), identical in every process and on every machine, reproducible without polars
(e.g. the ``xxhash`` package), and as fast as polars' native hash. The 64-bit digest is stored
as Int64 (bit-for-bit reinterpretation of the unsigned value) because Delta Lake has no unsigned
integers.

What goes into a hash, per sample (parts joined by the ASCII unit separator, nulls as NUL):
- field provenance: ``"<feature>/<field>@<code version>"`` + the data versions of the upstream
  fields it depends on, in sorted (feature, field) order; for a root feature, the value the caller
  gave for that field in ``samples["provenance_by_field"]``;
- sample provenance: each ``field key`` and its provenance, in declaration order;
- data version: the provenance, unless the writer overrides a field's data version (e.g. with a
  content hash) to stop propagation when the content did not really change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl
import polars_hash as plh

from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    FeatureSpec,
)
from dagster_hpc.incremental.graph import FieldRef

HASH_ALGORITHM = "xxh3_64"
HASH_DTYPE = pl.Int64
# Separates hashed parts so ("ab", "c") and ("a", "bc") hash differently.
_SEPARATOR = "\x1f"
# Stands in for a null part (a null would otherwise null the whole concatenation).
_NULL_TOKEN = "\x00"
# Prefix for user-supplied data versions, so an override can never equal a provenance by accident.
_DATA_VERSION_TAG = "data_version"


def hash_parts(parts: Sequence[pl.Expr]) -> pl.Expr:
    """xxh3-64 of the parts (cast to text, nulls as NUL, joined by US), as Int64."""
    texts = [p.cast(pl.String).fill_null(_NULL_TOKEN) for p in parts]
    digest = plh.concat_str(texts, separator=_SEPARATOR).nchash.xxh3_64()
    return digest.reinterpret(signed=True)


def field_token(feature: FeatureSpec, field_key: str) -> str:
    return f"{feature.key}/{field_key}@{feature.field(field_key).code_version}"


def field_provenance_exprs(
    feature: FeatureSpec,
    inputs: Mapping[str, Sequence[FieldRef]],
    input_column: Callable[[FieldRef], str],
) -> dict[str, pl.Expr]:
    """Downstream fields: hash of the field token and the upstream data versions it reads."""
    return {
        key: hash_parts(
            [pl.lit(field_token(feature, key))] + [pl.col(input_column(ref)) for ref in inputs[key]]
        )
        for key in feature.field_keys
    }


def root_provenance_exprs(
    feature: FeatureSpec, source: str = PROVENANCE_BY_FIELD
) -> dict[str, pl.Expr]:
    """Root fields: hash of the field token and the caller's value for that field."""
    return {
        key: hash_parts([pl.lit(field_token(feature, key)), pl.col(source).struct.field(key)])
        for key in feature.field_keys
    }


def with_provenance(
    lf: pl.LazyFrame, feature: FeatureSpec, fields: Mapping[str, pl.Expr]
) -> pl.LazyFrame:
    """Add ``provenance_by_field`` (struct) and the sample-level ``provenance``."""
    keys = feature.field_keys
    tmp = {key: f"__prov_{key}" for key in keys}
    parts: list[pl.Expr] = []
    for key in keys:
        parts += [pl.lit(key), pl.col(tmp[key])]
    return (
        lf.with_columns(fields[key].alias(tmp[key]) for key in keys)
        .with_columns(
            pl.struct([pl.col(tmp[key]).alias(key) for key in keys]).alias(PROVENANCE_BY_FIELD),
            hash_parts(parts).alias(PROVENANCE),
        )
        .drop(list(tmp.values()))
    )


def with_versions(df: pl.DataFrame, feature: FeatureSpec) -> pl.DataFrame:
    """Add data versions (overrides applied) and code versions before a write.

    An override is a ``data_version_by_field`` struct holding any of the feature's fields; a null
    entry falls back to the provenance. Override values are hashed (tagged), so any content hash
    or string works.
    """
    keys = feature.field_keys
    override = None
    if DATA_VERSION_BY_FIELD in df.columns:
        dtype = df.schema[DATA_VERSION_BY_FIELD]
        override = {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()
    dv: dict[str, pl.Expr] = {}
    for key in keys:
        provenance = pl.col(PROVENANCE_BY_FIELD).struct.field(key)
        if override is not None and key in override:
            given = pl.col(DATA_VERSION_BY_FIELD).struct.field(key)
            tagged = hash_parts([pl.lit(_DATA_VERSION_TAG), given])
            dv[key] = pl.when(given.is_null()).then(provenance).otherwise(tagged)
        else:
            dv[key] = provenance
    tmp = {key: f"__dv_{key}" for key in keys}
    parts: list[pl.Expr] = []
    for key in keys:
        parts += [pl.lit(key), pl.col(tmp[key])]
    return (
        df.with_columns(dv[key].alias(tmp[key]) for key in keys)
        .with_columns(
            pl.struct([pl.col(tmp[key]).alias(key) for key in keys]).alias(DATA_VERSION_BY_FIELD),
            hash_parts(parts).alias(DATA_VERSION),
            pl.struct([pl.lit(feature.field(key).code_version).alias(key) for key in keys]).alias(
                CODE_VERSION_BY_FIELD
            ),
        )
        .drop(list(tmp.values()))
    )
