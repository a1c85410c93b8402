"""Provenance and data versions, computed with vectorised polars expressions (no per-sample Python).

Hash decision (recorded in every stored table as ``HASH_ALGORITHM``):
polars' own ``Expr.hash`` is seeded and documented as unstable across polars versions, so a
polars upgrade (or a compute node with another polars) would silently mark every sample stale.
We use two fully specified functions instead, identical in every process, on every machine and
with every polars version, and reproducible without polars (the unit tests check both against a
pure-Python reference):

- text -> 64 bits: xxh3-64 (seed 0) from the ``polars-hash`` plugin, for what callers hand us
  (root field values, data-version overrides) and for field tokens;
- 64-bit values -> 64 bits: a fold with xxh3's avalanche finalizer,
  ``acc = avalanche((acc ^ (x * P2)) * P1)`` over the inputs in order, starting from the token's
  xxh3. It needs no integer-to-text conversion, which is what makes downstream provenance as cheap
  as a plain polars hash (casting 1M integers to text costs more than hashing them).

Digests are stored as Int64 (bit-for-bit reinterpretation of the unsigned value) because Delta
Lake has no unsigned integers.

What goes into a hash, per sample:
- root field provenance: xxh3 of ``"<feature>/<field>@<code version>"`` US value-as-text
  (US = the ASCII unit separator; a null value as NUL);
- downstream field provenance: fold(token, data versions of the upstream fields it depends on in
  sorted (feature, field) order), token = xxh3 of ``"<feature>/<field>@<code version>"``;
- sample provenance: fold(xxh3(``"<feature>#provenance"``), field provenances in declaration order);
- data version: the provenance, unless the writer overrides a field's data version (e.g. with a
  content hash: xxh3 of ``"data_version"`` US value) to stop propagation when the content did not
  really change; the sample data version folds them exactly like the provenance (same token), so
  without overrides ``data_version == provenance`` per field and per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial

import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.compute as pc

from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    FeatureSpec,
)
from dagster_hpc.incremental.graph import FieldRef

HASH_ALGORITHM = "xxh3_64+avalanche_fold/1"
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


# xxh3/xxh64 constants: PRIME64_1, PRIME64_2 and the xxh3 avalanche multiplier.
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_AVALANCHE = 0x165667919E3779F9
_MASK64 = (1 << 64) - 1
# Stands in for a null 64-bit input (xxh3-64 of the empty string).
NULL_INPUT = 0x2D06800538D394C2
_P1_SCALAR = pa.scalar(_P1, pa.uint64())
_P2_SCALAR = pa.scalar(_P2, pa.uint64())
_AV_SCALAR = pa.scalar(_AVALANCHE, pa.uint64())
_NULL_SCALAR = pa.scalar(NULL_INPUT, pa.uint64())
_SHIFT_37 = pa.scalar(37, pa.uint64())
_SHIFT_32 = pa.scalar(32, pa.uint64())


@lru_cache(maxsize=4096)
def text_hash(text: str) -> int:
    """xxh3-64 of a Python string (the same function as hash_parts on one part), unsigned."""
    return pl.select(hash_parts([pl.lit(text)])).item() & _MASK64


def fold_hashes(token: str, inputs: Sequence[pl.Expr]) -> pl.Expr:
    """Combine Int64 digests in order, seeded by xxh3(token); Int64 result.

    Runs as one vectorised Arrow kernel chain per batch (a polars expression for the same fold
    would repeat each intermediate in the expression tree, doubling the work per input).
    """
    seed = text_hash(token)
    if not inputs:
        return pl.lit(_signed(seed), dtype=pl.Int64)
    packed = pl.struct(
        [value.reinterpret(signed=False).alias(f"in{i}") for i, value in enumerate(inputs)]
    )
    return packed.map_batches(
        partial(_fold_batch, seed), return_dtype=pl.Int64, is_elementwise=True
    )


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _fold_batch(seed: int, packed: pl.Series) -> pl.Series:
    u64 = pa.uint64()
    acc: pa.Array | pa.Scalar = pa.scalar(seed, u64)
    for column in packed.struct.unnest().iter_columns():
        x = pc.fill_null(column.to_arrow(), _NULL_SCALAR)
        mixed = pc.multiply(pc.bit_wise_xor(acc, pc.multiply(x, _P2_SCALAR)), _P1_SCALAR)
        mixed = pc.multiply(pc.bit_wise_xor(mixed, pc.shift_right(mixed, _SHIFT_37)), _AV_SCALAR)
        acc = pc.bit_wise_xor(mixed, pc.shift_right(mixed, _SHIFT_32))
    return pl.Series(packed.name, acc, dtype=pl.UInt64).reinterpret(signed=True)


def fold_reference(token_hash: int, values: Sequence[int | None]) -> int:
    """The fold in plain Python (unsigned in, unsigned out): the specification the tests pin."""
    acc = token_hash
    for value in values:
        x = NULL_INPUT if value is None else value & _MASK64
        h = ((acc ^ ((x * _P2) & _MASK64)) * _P1) & _MASK64
        h = ((h ^ (h >> 37)) * _AVALANCHE) & _MASK64
        acc = h ^ (h >> 32)
    return acc


def field_token(feature: FeatureSpec, field_key: str) -> str:
    return f"{feature.key}/{field_key}@{feature.field(field_key).code_version}"


def field_provenance_exprs(
    feature: FeatureSpec,
    inputs: Mapping[str, Sequence[FieldRef]],
    input_column: Callable[[FieldRef], str],
) -> dict[str, pl.Expr]:
    """Downstream fields: hash of the field token and the upstream data versions it reads."""
    return {
        key: fold_hashes(
            field_token(feature, key), [pl.col(input_column(ref)) for ref in inputs[key]]
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
    sample = fold_hashes(f"{feature.key}#provenance", [pl.col(tmp[key]) for key in keys])
    return (
        lf.with_columns(fields[key].alias(tmp[key]) for key in keys)
        .with_columns(
            pl.struct([pl.col(tmp[key]).alias(key) for key in keys]).alias(PROVENANCE_BY_FIELD),
            sample.alias(PROVENANCE),
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
    # Same token as the sample provenance: without overrides the two are equal (as documented).
    sample = fold_hashes(f"{feature.key}#provenance", [pl.col(tmp[key]) for key in keys])
    return (
        df.with_columns(dv[key].alias(tmp[key]) for key in keys)
        .with_columns(
            pl.struct([pl.col(tmp[key]).alias(key) for key in keys]).alias(DATA_VERSION_BY_FIELD),
            sample.alias(DATA_VERSION),
            pl.struct([pl.lit(feature.field(key).code_version).alias(key) for key in keys]).alias(
                CODE_VERSION_BY_FIELD
            ),
        )
        .drop(list(tmp.values()))
    )
