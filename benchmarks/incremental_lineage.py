"""Lineage workloads for benchmarks/incremental.py: expansion and aggregation.

Imported by the measuring children (ours and the floor in the project's venv, metaxy in its own),
so nothing here imports dagster_hpc or metaxy at module level.

- expansion: ``bench/docs`` (PARENTS documents: text, title) -> ``bench/chunks`` (CHILDREN per
  document, ids doc_id + chunk; its field reads the text only). 1% changed = the text of every
  100th document.
- aggregation: ``bench/readings`` (ROWS readings: sensor, t; value, unit) -> ``bench/stats``
  (one row per sensor, GROUPS sensors; its field reads the value only). 1% changed = every
  reading of every 100th sensor (1% of the rows and of the groups).

Measured: resolving the downstream feature, as in the identity workload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PARENTS = 100_000
CHILDREN = 10
ROWS = 1_000_000
GROUPS = 10_000
CHANGED_EVERY = 100
WORKLOADS = ("expansion", "aggregation")


def scale(workload: str, n: int) -> tuple[int, int]:
    """(upstream samples, downstream samples) for a workload at ``n`` (the parents / rows)."""
    if workload == "expansion":
        return n, n
    return n, n // (ROWS // GROUPS)


def default_n(workload: str) -> int:
    return PARENTS if workload == "expansion" else ROWS


def expected_counts(workload: str, n: int, scenario: str) -> dict[str, int]:
    """Counts at the resolve key (parents for expansion, groups for aggregation)."""
    _, downstream = scale(workload, n)
    if scenario == "first":
        return {"new": downstream, "stale": 0, "orphaned": 0}
    if scenario == "changed_1pct":
        return {"new": 0, "stale": len(range(0, downstream, CHANGED_EVERY)), "orphaned": 0}
    return {"new": 0, "stale": 0, "orphaned": 0}


# Data ----------------------------------------------------------------------------------------


def doc_rows(n: int, changed: bool):
    import polars as pl

    i = pl.col("i")
    text = pl.format("text-{}", i * 7919 % 1000)
    if changed:
        text = pl.when(i % CHANGED_EVERY == 0).then(pl.format("{}-edited", text)).otherwise(text)
    return pl.DataFrame(pl.int_range(n, eager=True).alias("i")).select(
        pl.format("d{}", i).alias("doc_id"),
        text.alias("text"),
        pl.format("T{}", i % 10).alias("title"),
    )


def child_rows(n: int):
    import polars as pl

    return pl.DataFrame(pl.int_range(n * CHILDREN, eager=True).alias("j")).select(
        pl.format("d{}", pl.col("j") // CHILDREN).alias("doc_id"),
        (pl.col("j") % CHILDREN).alias("chunk"),
        pl.format("piece-{}", pl.col("j")).alias("piece"),
    )


def reading_rows(n: int, changed: bool):
    import polars as pl

    per_group = ROWS // GROUPS
    i = pl.col("i")
    value = (i * 7919 % 1000) / 10.0
    if changed:
        value = pl.when((i // per_group) % CHANGED_EVERY == 0).then(value + 0.5).otherwise(value)
    return pl.DataFrame(pl.int_range(n, eager=True).alias("i")).select(
        pl.format("s{}", i // per_group).alias("sensor"),
        (i % per_group).alias("t"),
        value.alias("value"),
        pl.lit("C").alias("unit"),
    )


def _prov(df, fields: list[str], name: str):
    import polars as pl

    return df.with_columns(pl.struct([pl.col(f).cast(pl.String) for f in fields]).alias(name))


# Ours ----------------------------------------------------------------------------------------


def ours_graph(workload: str):
    from dagster_hpc.incremental import (
        Aggregation,
        Expansion,
        FeatureDep,
        FeatureGraph,
        FeatureSpec,
        FieldDep,
        FieldSpec,
    )

    if workload == "expansion":
        up = FeatureSpec(
            key="bench/docs", id_columns=("doc_id",), fields=(FieldSpec("text"), FieldSpec("title"))
        )
        down = FeatureSpec(
            key="bench/chunks",
            id_columns=("doc_id", "chunk"),
            deps=(FeatureDep("bench/docs", lineage=Expansion()),),
            fields=(FieldSpec("piece", deps=(FieldDep("bench/docs", ("text",)),)),),
        )
    else:
        up = FeatureSpec(
            key="bench/readings",
            id_columns=("sensor", "t"),
            fields=(FieldSpec("value"), FieldSpec("unit")),
        )
        down = FeatureSpec(
            key="bench/stats",
            id_columns=("sensor",),
            deps=(FeatureDep("bench/readings", lineage=Aggregation()),),
            fields=(FieldSpec("mean", deps=(FieldDep("bench/readings", ("value",)),)),),
        )
    return FeatureGraph([up, down]), up, down


def _samples(workload: str, n: int, changed: bool, name: str):
    df = doc_rows(n, changed) if workload == "expansion" else reading_rows(n, changed)
    fields = ["text", "title"] if workload == "expansion" else ["value", "unit"]
    return _prov(df, fields, name)


def ours_setup(workload: str, root: Path, n: int, scenario: str) -> None:
    from dagster_hpc.incremental import PROVENANCE, PROVENANCE_BY_FIELD, DeltaStore

    graph, up, down = ours_graph(workload)
    store = DeltaStore(root, graph)
    samples = _samples(workload, n, False, PROVENANCE_BY_FIELD)
    store.write(up, store.resolve_update(up, samples=samples).to_process())
    if scenario == "first":
        return
    todo = store.resolve_update(down).to_process()
    if workload == "expansion":
        todo = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(
            child_rows(n), on="doc_id"
        )
    store.write(down, todo)
    if scenario == "changed_1pct":
        samples = _samples(workload, n, True, PROVENANCE_BY_FIELD)
        store.write(up, store.resolve_update(up, samples=samples).to_process())


def ours_prepare(workload: str, root: Path) -> Callable[[], dict[str, int]]:
    from dagster_hpc.incremental import DeltaStore

    graph, _, down = ours_graph(workload)
    store = DeltaStore(root, graph)

    def measure() -> dict[str, int]:
        counts = store.resolve_update(down).counts()
        counts.pop("failed")
        return counts

    return measure


# metaxy --------------------------------------------------------------------------------------


def metaxy_features(workload: str):
    import metaxy as mx

    if workload == "expansion":

        class Docs(
            mx.BaseFeature,
            spec=mx.FeatureSpec(key="bench/docs", id_columns=["doc_id"], fields=["text", "title"]),
        ):
            doc_id: str

        class Chunks(
            mx.BaseFeature,
            spec=mx.FeatureSpec(
                key="bench/chunks",
                id_columns=["doc_id", "chunk"],
                deps=[
                    mx.FeatureDep(
                        feature=Docs, lineage=mx.LineageRelationship.expansion(on=["doc_id"])
                    )
                ],
                fields=[
                    mx.FieldSpec(key="piece", deps=[mx.FieldDep(feature=Docs, fields=["text"])])
                ],
            ),
        ):
            doc_id: str
            chunk: int

        return Docs, Chunks

    class Readings(
        mx.BaseFeature,
        spec=mx.FeatureSpec(
            key="bench/readings", id_columns=["sensor", "t"], fields=["value", "unit"]
        ),
    ):
        sensor: str
        t: int

    class Stats(
        mx.BaseFeature,
        spec=mx.FeatureSpec(
            key="bench/stats",
            id_columns=["sensor"],
            deps=[
                mx.FeatureDep(
                    feature=Readings, lineage=mx.LineageRelationship.aggregation(on=["sensor"])
                )
            ],
            fields=[
                mx.FieldSpec(key="mean", deps=[mx.FieldDep(feature=Readings, fields=["value"])])
            ],
        ),
    ):
        sensor: str

    return Readings, Stats


def _metaxy_store(root: Path):
    from metaxy.ext.polars.handlers.delta import DeltaMetadataStore

    return DeltaMetadataStore(root_path=str(root))


def metaxy_setup(workload: str, root: Path, n: int, scenario: str) -> None:
    up, down = metaxy_features(workload)
    store = _metaxy_store(root)
    name = "metaxy_provenance_by_field"
    with store.open("w"):
        samples = _samples(workload, n, False, name)
        store.write(up, store.resolve_update(up, samples=samples).new.to_native())
        if scenario == "first":
            return
        todo = store.resolve_update(down).new.to_native()
        if workload == "expansion":
            todo = todo.join(child_rows(n).drop("piece"), on="doc_id")
        else:  # metaxy hands out one row per upstream member; store one per group
            todo = todo.unique(subset=["sensor"]).drop("t", "value", "unit")
        store.write(down, todo)
        if scenario == "changed_1pct":
            samples = _samples(workload, n, True, name)
            store.write(up, store.resolve_update(up, samples=samples).stale.to_native())


def metaxy_prepare(workload: str, root: Path) -> Callable[[], dict[str, int]]:
    _, down = metaxy_features(workload)
    store = _metaxy_store(root)

    def measure() -> dict[str, int]:
        with store.open("r"):
            inc = store.resolve_update(down)
            new, stale = inc.new.to_native(), inc.stale.to_native()
            key = "doc_id" if workload == "expansion" else "sensor"
            # metaxy reports aggregation rows per upstream member: count distinct keys
            return {
                "new": new[key].n_unique() if len(new) else 0,
                "stale": stale[key].n_unique() if len(stale) else 0,
                "orphaned": len(inc.orphaned),
            }

    return measure


# Floor: plain polars hash + group + join -----------------------------------------------------


def _floor_expected(workload: str, root: Path):
    import polars as pl

    if workload == "expansion":
        return pl.scan_delta(str(root / "up")).select(
            "doc_id", pl.col("text").hash(seed=0).reinterpret(signed=True).alias("h")
        )
    member = pl.concat_str(
        [pl.col("t").cast(pl.String), pl.col("value").cast(pl.String)], separator="|"
    )
    return (
        pl.scan_delta(str(root / "up"))
        .select("sensor", member.hash(seed=0).alias("m"))
        .group_by("sensor")
        .agg(pl.col("m").sum().reinterpret(signed=True).alias("h"))
    )


def floor_setup(workload: str, root: Path, n: int, scenario: str) -> None:
    import polars as pl

    rows = doc_rows(n, False) if workload == "expansion" else reading_rows(n, False)
    rows.write_delta(root / "up")
    key = "doc_id" if workload == "expansion" else "sensor"
    if scenario == "first":
        schema = {key: pl.String, "h": pl.Int64}
        if workload == "expansion":
            schema["chunk"] = pl.Int64
        pl.DataFrame(schema=schema).write_delta(root / "down")
        return
    hashed = _floor_expected(workload, root).collect()
    if workload == "expansion":
        hashed = hashed.join(child_rows(n).drop("piece"), on="doc_id")
    hashed.write_delta(root / "down")
    if scenario == "changed_1pct":
        changed = doc_rows(n, True) if workload == "expansion" else reading_rows(n, True)
        changed.write_delta(root / "up", mode="overwrite")


def floor_prepare(workload: str, root: Path) -> Callable[[], dict[str, int]]:
    import polars as pl

    key = "doc_id" if workload == "expansion" else "sensor"

    def measure() -> dict[str, int]:
        expected = _floor_expected(workload, root)
        stored = pl.scan_delta(str(root / "down")).select(key, pl.col("h").alias("h_old"))
        if workload == "expansion":
            stored = stored.group_by(key).agg(pl.col("h_old").first())
        joined = expected.join(stored, on=key, how="full", coalesce=True).collect()
        new = joined.filter(pl.col("h_old").is_null() & pl.col("h").is_not_null())
        stale = joined.filter(pl.col("h").is_not_null() & (pl.col("h") != pl.col("h_old")))
        orphaned = joined.filter(pl.col("h").is_null())
        return {"new": new.height, "stale": stale.height, "orphaned": orphaned.height}

    return measure


SETUP = {"ours": ours_setup, "metaxy": metaxy_setup, "floor": floor_setup}
PREPARE = {"ours": ours_prepare, "metaxy": metaxy_prepare, "floor": floor_prepare}
