"""The expected provenance of a downstream feature, from its upstream features' stored versions.

One frame per dependency (filtered, reduced to the resolve key by its lineage), joined on the
resolve key (required deps inner, optional deps left; all optional: outer), then hashed:

- identity / expansion: the upstream's per-field data versions, one row per resolve key;
- aggregation: per group (``on``), a wrapping sum over the members of
  fold(member id hash, data version) per upstream field: order-independent, and it changes
  when a member is added, removed, or a value moves from one member to another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from dagster_hpc.incremental.errors import SamplesError
from dagster_hpc.incremental.feature import (
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    Aggregation,
    FeatureDep,
    FeatureSpec,
)
from dagster_hpc.incremental.graph import FeatureGraph, FieldRef
from dagster_hpc.incremental.provenance import (
    field_provenance_exprs,
    fold_hashes,
    hash_parts,
    with_provenance,
)

Scan = Callable[[FeatureSpec], pl.LazyFrame | None]
# Seeds the per-member fold of an aggregation (so it never equals an identity input).
_MEMBER_TOKEN = "aggregation-member"


def input_column(ref: FieldRef) -> str:
    return f"__in__{ref[0]}__{ref[1]}"


def check_filter_columns(
    filters: Sequence[pl.Expr], schema: pl.Schema, feature: str, what: str
) -> None:
    """Raise naming the column and the feature when a filter reads a column the frame lacks."""
    for expr in filters:
        if not isinstance(expr, pl.Expr):
            raise SamplesError(
                f"{what}: filters must be polars expressions, got {type(expr).__name__}."
            )
        missing = [c for c in expr.meta.root_names() if c not in schema]
        if missing:
            raise SamplesError(
                f"{what}: the filter {expr} reads column(s) {missing}, which feature {feature!r} "
                f"does not have; its columns are {schema.names()}."
            )


def downstream_expected(
    graph: FeatureGraph,
    spec: FeatureSpec,
    scan: Scan,
    global_filters: Sequence[pl.Expr] = (),
) -> pl.LazyFrame:
    """key + provenance_by_field + provenance for every sample the upstream state implies."""
    key = list(graph.resolve_key(spec))
    refs = graph.upstream_fields(spec)
    required: list[pl.LazyFrame] = []
    optional: list[pl.LazyFrame] = []
    absent: list[str] = []  # input columns of optional upstreams never written: null
    for dep in spec.feature_deps:
        wanted = [r for r in refs if r[0] == dep.feature]
        part = _dep_frame(graph, spec, dep, scan, key, wanted, global_filters)
        if part is None:
            absent += [input_column(r) for r in wanted]
        else:
            (optional if dep.optional else required).append(part)
    if not required and not optional:
        joined = pl.LazyFrame(schema={c: pl.String for c in key})
    else:
        joined = _join(required, optional, key)
    joined = joined.with_columns(pl.lit(None, dtype=pl.Int64).alias(c) for c in absent)
    inputs = graph.field_inputs(spec)
    lf = with_provenance(joined, spec, field_provenance_exprs(spec, inputs, input_column))
    return lf.select(key + [PROVENANCE_BY_FIELD, PROVENANCE])


def _dep_frame(
    graph: FeatureGraph,
    spec: FeatureSpec,
    dep: FeatureDep,
    scan: Scan,
    key: list[str],
    wanted: list[FieldRef],
    global_filters: Sequence[pl.Expr],
) -> pl.LazyFrame | None:
    up = graph[dep.feature]
    up_lf = scan(up)
    versions = [
        pl.col(DATA_VERSION_BY_FIELD).struct.field(ref[1]).alias(input_column(ref))
        for ref in wanted
    ]
    if up_lf is None:
        if not dep.optional:
            raise SamplesError(
                f"resolve_update({spec.key!r}): its upstream feature {up.key!r} was never "
                f"written, so nothing about {spec.key!r} can be decided (and nothing is reported "
                "orphaned or deleted). Materialize the upstream first."
            )
        return None
    filters = [*dep.filters, *global_filters]
    if filters:
        schema = up_lf.collect_schema()
        check_filter_columns(dep.filters, schema, up.key, f"FeatureDep({up.key!r}) of {spec.key!r}")
        check_filter_columns(
            global_filters, schema, up.key, f"resolve_update({spec.key!r}) filters"
        )
        up_lf = up_lf.filter(*filters)
    if not isinstance(dep.lineage, Aggregation):
        return up_lf.select(key + versions)
    members = [c for c in up.id_columns if c not in key]
    schema = up_lf.collect_schema()
    member_hashes = [_member_hash(c, schema[c]) for c in members]
    contributions = [
        fold_hashes(_MEMBER_TOKEN, [*member_hashes, v])
        .reinterpret(signed=False)
        .alias(v.meta.output_name())
        for v in versions
    ]
    sums = [pl.col(c.meta.output_name()).sum().reinterpret(signed=True) for c in contributions]
    return up_lf.select(key + contributions).group_by(key).agg(sums)


def _member_hash(column: str, dtype: pl.DataType) -> pl.Expr:
    # Integer ids go into the fold as they are (no text cast: the cheap path at 1M rows).
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    return hash_parts([pl.col(column)])


def _join(
    required: list[pl.LazyFrame], optional: list[pl.LazyFrame], key: list[str]
) -> pl.LazyFrame:
    if required:
        joined = required[0]
        for part in required[1:]:
            joined = joined.join(part, on=key, how="inner")
        for part in optional:
            joined = joined.join(part, on=key, how="left")
        return joined
    joined = optional[0]
    for part in optional[1:]:
        joined = joined.join(part, on=key, how="full", coalesce=True)
    return joined
