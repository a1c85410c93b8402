"""The seed demo's two features (no Dagster here: payloads import this on compute nodes).

``raw``: a root feature with fields file_uri, value and category, provided by the caller.
``derived``: result = value ** 2 (reads only ``raw.value``) and value_bucket (reads ``raw.value``
and ``raw.category``). Changing ``file_uri`` alone leaves ``derived`` up to date.
"""

from __future__ import annotations

import polars as pl

from dagster_hpc.incremental import FeatureGraph, FeatureSpec, FieldDep, FieldSpec

ID_COLUMNS = ("sample_uid",)

RAW = FeatureSpec(
    key="demo/raw",
    id_columns=ID_COLUMNS,
    fields=(FieldSpec("file_uri"), FieldSpec("value"), FieldSpec("category")),
)

DERIVED = FeatureSpec(
    key="demo/derived",
    id_columns=ID_COLUMNS,
    deps=("demo/raw",),
    fields=(
        FieldSpec("result", code_version="1", deps=(FieldDep("demo/raw", ("value",)),)),
        FieldSpec(
            "value_bucket", code_version="1", deps=(FieldDep("demo/raw", ("value", "category")),)
        ),
    ),
)

GRAPH = FeatureGraph([RAW, DERIVED])


def raw_samples(rows: list[dict]) -> pl.DataFrame:
    """Root samples: the caller's values become the per-field provenance of ``raw``."""
    return pl.DataFrame(rows).with_columns(
        pl.struct(
            pl.col("file_uri"),
            pl.col("value").cast(pl.String),
            pl.col("category"),
        ).alias("provenance_by_field")
    )


def compute_derived(inputs: pl.DataFrame) -> pl.DataFrame:
    """The downstream computation, vectorised: result = value**2, value_bucket from value/category."""
    return inputs.with_columns(
        (pl.col("value") ** 2).alias("result"),
        pl.concat_str(
            [
                pl.col("category"),
                pl.when(pl.col("value") < 10).then(pl.lit("low")).otherwise(pl.lit("high")),
            ],
            separator=":",
        ).alias("value_bucket"),
    )


ROUND_1 = [
    {"sample_uid": "s1", "file_uri": "s3://demo/s1.bin", "value": 1.0, "category": "a"},
    {"sample_uid": "s2", "file_uri": "s3://demo/s2.bin", "value": 5.0, "category": "b"},
    {"sample_uid": "s3", "file_uri": "s3://demo/s3.bin", "value": 12.0, "category": "a"},
]
# Round 2: s2's value changed, s3 removed, s4 added.
ROUND_2 = [
    ROUND_1[0],
    {"sample_uid": "s2", "file_uri": "s3://demo/s2.bin", "value": 7.0, "category": "b"},
    {"sample_uid": "s4", "file_uri": "s3://demo/s4.bin", "value": 20.0, "category": "c"},
]
# Round 3: nothing changed.
ROUND_3 = ROUND_2
ROUNDS = (ROUND_1, ROUND_2, ROUND_3)
