"""Lineage per dependency: expansion (one -> many), aggregation (many -> one), optional deps,
filters; on both store kinds."""

from __future__ import annotations

import polars as pl
import pytest

from dagster_hpc.incremental import (
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    Aggregation,
    Expansion,
    FeatureDep,
    FeatureGraph,
    FeatureGraphError,
    FeatureSpec,
    FieldDep,
    FieldSpec,
    SamplesError,
)

DOCS = FeatureSpec(
    key="d/docs", id_columns=("doc_id",), fields=(FieldSpec("text"), FieldSpec("title"))
)
CHUNKS = FeatureSpec(
    key="d/chunks",
    id_columns=("doc_id", "chunk"),
    deps=(FeatureDep("d/docs", lineage=Expansion(on=("doc_id",))),),
    fields=(FieldSpec("piece", deps=(FieldDep("d/docs", ("text",)),)),),
)
EMBED = FeatureSpec(
    key="d/embed",
    id_columns=("doc_id", "chunk"),
    deps=("d/chunks",),
    fields=(FieldSpec("vector"),),
)
LINEAGE_GRAPH = FeatureGraph([DOCS, CHUNKS, EMBED])


def _docs(store, rows: dict[str, tuple[str, str]]):
    df = pl.DataFrame(
        {
            "doc_id": list(rows),
            "text": [v[0] for v in rows.values()],
            "title": [v[1] for v in rows.values()],
        }
    ).with_columns(pl.struct("text", "title").alias(PROVENANCE_BY_FIELD))
    inc = store.resolve_update(DOCS, samples=df)
    store.write(DOCS, inc.to_process())
    store.delete(DOCS, inc.orphaned)
    return inc


def _chunk(store, todo: pl.DataFrame) -> int:
    """Split each document's text on spaces: one child per word (zero for an empty text)."""
    upstream = store.load_upstream(CHUNKS, todo)
    children = (
        upstream.with_columns(pl.col("text").str.split(" ").alias("piece"))
        .explode("piece")
        .filter(pl.col("piece") != "")
        .with_columns(pl.int_range(pl.len()).over("doc_id").alias("chunk"))
        .select("doc_id", "chunk", "piece")
    )
    rows = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(children, on="doc_id")
    return store.write(CHUNKS, rows, parents=todo)


def test_expansion_rounds(make_store):
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"a": ("one two three", "A"), "b": ("four five", "B"), "e": ("", "E")})
    inc = store.resolve_update(CHUNKS)
    # one row per parent, all new
    assert sorted(inc.new["doc_id"]) == ["a", "b", "e"]
    assert _chunk(store, inc.to_process()) == 5
    # the empty document is done too (parents=): nothing comes back
    assert store.resolve_update(CHUNKS).counts() == {
        "new": 0,
        "stale": 0,
        "orphaned": 0,
        "failed": 0,
    }

    # a title change: chunks do not read it -> up to date (field isolation across expansion)
    _docs(store, {"a": ("one two three", "A2"), "b": ("four five", "B"), "e": ("", "E")})
    assert store.resolve_update(CHUNKS).is_empty

    # a text change of a (fewer words), b removed: a stale once, b's children orphaned together
    _docs(store, {"a": ("one two", "A2"), "e": ("", "E")})
    inc = store.resolve_update(CHUNKS)
    assert inc.stale["doc_id"].to_list() == ["a"]
    assert inc.stale["stale_fields"].to_list() == [["piece"]]
    assert sorted(inc.orphaned.select("doc_id", "chunk").rows()) == [("b", 0), ("b", 1)]
    _chunk(store, inc.to_process())
    stored = store.read(CHUNKS).sort("doc_id", "chunk")
    # the old third child of a is gone (replaced in the same write), no duplicates
    assert stored.filter(pl.col("doc_id") == "a")["piece"].to_list() == ["one", "two"]
    # writing the same parent again never duplicates rows
    _chunk(store, inc.to_process())
    assert store.read(CHUNKS).filter(pl.col("doc_id") == "a").height == 2
    assert store.delete(CHUNKS, inc.orphaned) == 2
    assert store.resolve_update(CHUNKS).is_empty


def _two_field_chunks(heading_version: str) -> FeatureGraph:
    chunks = FeatureSpec(
        key="d/chunks",
        id_columns=("doc_id", "chunk"),
        deps=(FeatureDep("d/docs", lineage=Expansion(on=("doc_id",))),),
        fields=(
            FieldSpec("piece", deps=(FieldDep("d/docs", ("text",)),)),
            FieldSpec(
                "heading", code_version=heading_version, deps=(FieldDep("d/docs", ("title",)),)
            ),
        ),
    )
    return FeatureGraph([DOCS, chunks])


def test_expansion_stale_reasons_per_field(make_store):
    """Which fields of an expansion's parent are stale, and why, come from its stored children
    (looked up by the stored provenance: parents a and c share theirs) or, for a parent with no
    child, from its empty-parent record."""
    store = make_store(_two_field_chunks("1"))
    _docs(store, {"a": ("p q", "T"), "b": ("r", "T"), "c": ("p q", "T"), "e": ("", "T")})
    chunks = store.graph["d/chunks"]

    def write_chunks(todo):
        children = (
            store.load_upstream(chunks, todo)
            .with_columns(pl.col("text").str.split(" ").alias("piece"))
            .explode("piece")
            .filter(pl.col("piece") != "")
            .with_columns(
                pl.int_range(pl.len()).over("doc_id").alias("chunk"),
                pl.col("title").alias("heading"),
            )
            .select("doc_id", "chunk", "piece", "heading")
        )
        rows = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(children, on="doc_id")
        store.write(chunks, rows, parents=todo)

    write_chunks(store.resolve_update(chunks).to_process())
    assert store.resolve_update(chunks).is_empty
    # the heading's code moves (every parent) and b's text changes (b's piece only)
    store.graph = _two_field_chunks("2")
    _docs(store, {"a": ("p q", "T"), "b": ("r s", "T"), "c": ("p q", "T"), "e": ("", "T")})
    stale = store.resolve_update("d/chunks").stale.sort("doc_id")
    assert stale["doc_id"].to_list() == ["a", "b", "c", "e"]
    assert stale["stale_fields"].to_list() == [
        ["heading"],
        ["piece", "heading"],
        ["heading"],
        ["heading"],
    ]
    assert stale["code_changed_fields"].to_list() == [["heading"]] * 4
    assert stale["data_changed_fields"].to_list() == [[], ["piece"], [], []]
    assert stale["stale_reason"].to_list() == [
        "code_changed",
        "code_and_data_changed",
        "code_changed",
        "code_changed",
    ]


def test_one_field_expansion_stale_reasons(make_store):
    """A one-field feature's stale reasons come from its sample provenance and code version."""
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"a": ("p q", "A"), "b": ("r", "B")})
    _chunk(store, store.resolve_update(CHUNKS).to_process())
    _docs(store, {"a": ("p q", "A2"), "b": ("r s", "B")})  # a: title only, b: text
    stale = store.resolve_update(CHUNKS).stale
    assert stale.select("doc_id", "stale_fields", "stale_reason").rows() == [
        ("b", ["piece"], "data_changed")
    ]
    bumped = FeatureSpec(
        key=CHUNKS.key,
        id_columns=CHUNKS.id_columns,
        deps=CHUNKS.deps,
        fields=(FieldSpec("piece", code_version="2", deps=(FieldDep("d/docs", ("text",)),)),),
    )
    store.graph = FeatureGraph([DOCS, bumped, EMBED])
    stale = store.resolve_update(CHUNKS.key).stale.sort("doc_id")
    assert stale["code_changed_fields"].to_list() == [["piece"], ["piece"]]
    assert stale["stale_reason"].to_list() == ["code_changed", "code_changed"]


def test_write_empty_parents_without_any_child_written(make_store):
    """Parents recorded done with no child at all (the children table never written) are up
    to date; a changed text brings one back; a parent with children is left as it is."""
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"e": ("", "E"), "f": ("", "F")})
    todo = store.resolve_update(CHUNKS).to_process()
    assert store.write_empty_parents(CHUNKS, todo) == 2
    assert store.resolve_update(CHUNKS).is_empty
    _docs(store, {"e": ("", "E"), "f": ("now words", "F")})
    inc = store.resolve_update(CHUNKS)
    assert inc.stale["doc_id"].to_list() == ["f"]
    _chunk(store, inc.to_process())
    assert store.write_empty_parents(CHUNKS, inc.to_process()) == 0  # f has children now
    assert store.resolve_update(CHUNKS).is_empty
    with pytest.raises(SamplesError, match="only an expansion feature has parents"):
        store.write_empty_parents(DOCS, todo)


def test_parent_split_across_writes_accumulates(make_store):
    """Two writes of one parent's children (e.g. two Ray blocks) keep both halves."""
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"a": ("w x y z", "A")})
    todo = store.resolve_update(CHUNKS).to_process()
    rows = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(
        pl.DataFrame({"doc_id": ["a"] * 4, "chunk": [0, 1, 2, 3], "piece": list("wxyz")}),
        on="doc_id",
    )
    store.write(CHUNKS, rows.head(2))
    store.write(CHUNKS, rows.tail(2))
    assert store.read(CHUNKS).height == 4
    assert store.resolve_update(CHUNKS).is_empty


def test_downstream_of_an_expansion_recomputes_only_changed_children(make_store):
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"a": ("p q", "A")})

    def chunk_with_content_versions():
        todo = store.resolve_update(CHUNKS).to_process()
        upstream = store.load_upstream(CHUNKS, todo)
        children = (
            upstream.with_columns(pl.col("text").str.split(" ").alias("piece"))
            .explode("piece")
            .with_columns(pl.int_range(pl.len()).over("doc_id").alias("chunk"))
            .with_columns(pl.struct(pl.col("piece")).alias(DATA_VERSION_BY_FIELD))
            .select("doc_id", "chunk", "piece", DATA_VERSION_BY_FIELD)
        )
        store.write(
            CHUNKS,
            todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(children, on="doc_id"),
        )

    chunk_with_content_versions()
    inc = store.resolve_update(EMBED)
    assert inc.counts()["new"] == 2
    store.write(EMBED, inc.to_process().with_columns(pl.lit(0.0).alias("vector")))
    _docs(store, {"a": ("p r", "A")})  # second chunk's text changed, the first did not
    chunk_with_content_versions()
    inc = store.resolve_update(EMBED)
    assert inc.stale.select("doc_id", "chunk").rows() == [("a", 1)]
    assert inc.counts()["new"] == 0


READINGS = FeatureSpec(
    key="s/readings",
    id_columns=("sensor", "t"),
    fields=(FieldSpec("value"), FieldSpec("unit")),
)
STATS = FeatureSpec(
    key="s/stats",
    id_columns=("sensor",),
    deps=(FeatureDep("s/readings", lineage=Aggregation()),),
    fields=(FieldSpec("mean", deps=(FieldDep("s/readings", ("value",)),)),),
)
AGG_GRAPH = FeatureGraph([READINGS, STATS])


def _readings(store, rows: list[tuple[str, int, float, str]]):
    df = pl.DataFrame(rows, schema=["sensor", "t", "value", "unit"], orient="row")
    df = df.with_columns(
        pl.struct(pl.col("value").cast(pl.String), "unit").alias(PROVENANCE_BY_FIELD)
    )
    inc = store.resolve_update(READINGS, samples=df)
    store.write(READINGS, inc.to_process())
    store.delete(READINGS, inc.orphaned)
    return inc


def _stats(store):
    inc = store.resolve_update(STATS)
    up = store.load_upstream(STATS, inc.to_process())
    means = up.group_by("sensor").agg(pl.col("value").mean().alias("mean"))
    store.write(STATS, inc.to_process().join(means, on="sensor"))
    return inc


BASE = [("s1", 0, 1.0, "C"), ("s1", 1, 2.0, "C"), ("s2", 0, 5.0, "C")]


@pytest.mark.parametrize(
    ("change", "stale"),
    [
        ([("s1", 0, 1.0, "C"), ("s1", 1, 2.0, "C"), ("s2", 0, 5.0, "K")], []),  # unit not read
        ([("s1", 1, 2.0, "C"), ("s1", 0, 1.0, "C"), ("s2", 0, 5.0, "C")], []),  # order
        ([("s1", 0, 1.0, "C"), ("s1", 1, 2.5, "C"), ("s2", 0, 5.0, "C")], ["s1"]),  # a value
        ([*BASE, ("s2", 1, 6.0, "C")], ["s2"]),  # a member added
        (BASE[1:], ["s1"]),  # a member removed
        ([("s1", 0, 2.0, "C"), ("s1", 1, 1.0, "C"), ("s2", 0, 5.0, "C")], ["s1"]),  # moved
    ],
)
def test_aggregation(make_store, change, stale):
    store = make_store(AGG_GRAPH)
    _readings(store, BASE)
    assert sorted(_stats(store).new["sensor"]) == ["s1", "s2"]
    assert store.read(STATS).sort("sensor")["mean"].to_list() == [1.5, 5.0]
    _readings(store, change)
    inc = store.resolve_update(STATS)
    assert sorted(inc.stale["sensor"]) == stale
    assert inc.counts()["new"] == 0


def test_lineage_validation():
    with pytest.raises(FeatureGraphError, match=r"Expansion\(on=\['doc_id'\]\).*strict subset"):
        FeatureGraph(
            [
                DOCS,
                FeatureSpec(
                    key="x",
                    id_columns=("doc_id",),
                    deps=(FeatureDep("d/docs", lineage=Expansion()),),
                    fields=(FieldSpec("f"),),
                ),
            ]
        )
    with pytest.raises(FeatureGraphError, match=r"Aggregation\(on=\['t'\]\)"):
        FeatureGraph(
            [
                READINGS,
                FeatureSpec(
                    key="x",
                    id_columns=("sensor",),
                    deps=(FeatureDep("s/readings", lineage=Aggregation(on=("t",))),),
                    fields=(FieldSpec("f"),),
                ),
            ]
        )
    with pytest.raises(FeatureGraphError, match="on=\\('doc_id',\\)"):
        Expansion(on="doc_id")


# Optional dependencies and filters ----------------------------------------------------------

A = FeatureSpec(key="o/a", id_columns=("uid",), fields=(FieldSpec("x"), FieldSpec("lang")))
B = FeatureSpec(key="o/b", id_columns=("uid",), fields=(FieldSpec("y"),))
C = FeatureSpec(
    key="o/c",
    id_columns=("uid",),
    deps=("o/a", FeatureDep("o/b", optional=True)),
    fields=(FieldSpec("z"),),
)
OPT_GRAPH = FeatureGraph([A, B, C])


def _root(store, spec, rows: dict):
    df = pl.DataFrame(rows).with_columns(
        pl.struct([f.key for f in spec.fields]).alias(PROVENANCE_BY_FIELD)
    )
    store.write(spec, store.resolve_update(spec, samples=df).to_process())


def test_optional_dependency(make_store):
    store = make_store(OPT_GRAPH)
    _root(store, A, {"uid": ["u1", "u2"], "x": ["1", "2"], "lang": ["en", "de"]})
    # b never written: optional, so c is resolvable; both samples new, deterministic provenance
    inc = store.resolve_update(C)
    assert sorted(inc.new["uid"]) == ["u1", "u2"]
    again = make_store(OPT_GRAPH)
    _root(again, A, {"uid": ["u1", "u2"], "x": ["1", "2"], "lang": ["en", "de"]})
    assert inc.new.sort("uid")[PROVENANCE].to_list() == (
        again.resolve_update(C).new.sort("uid")[PROVENANCE].to_list()
    )
    store.write(C, inc.to_process().with_columns(pl.lit(0).alias("z")))
    # b appears for u2 only: u2 stale, u1 (still missing in b) up to date
    _root(store, B, {"uid": ["u2"], "y": ["9"]})
    inc = store.resolve_update(C)
    assert inc.stale["uid"].to_list() == ["u2"]
    assert inc.counts()["new"] == 0


def test_filters_per_dependency_global_and_target(make_store):
    filtered = FeatureSpec(
        key="o/c",
        id_columns=("uid",),
        deps=(FeatureDep("o/a", filters=(pl.col("lang") == "en",)),),
        fields=(FieldSpec("z"),),
    )
    graph = FeatureGraph([A, B, filtered])
    store = make_store(graph)
    _root(store, A, {"uid": ["u1", "u2", "u3"], "x": ["1", "2", "3"], "lang": ["en", "de", "en"]})
    _root(store, B, {"uid": ["u1"], "y": ["9"]})
    assert sorted(store.resolve_update(filtered).new["uid"]) == ["u1", "u3"]
    inc = store.resolve_update(filtered, filters=[pl.col("x") != "3"])
    assert inc.new["uid"].to_list() == ["u1"]
    inc = store.resolve_update(filtered, target_filters=[pl.col("uid") == "u3"])
    assert inc.new["uid"].to_list() == ["u3"]
    store.write(filtered, inc.to_process().with_columns(pl.lit(0).alias("z")))
    # the target filter limits the stored side too: u3 is not orphaned when scoped to u1
    assert store.resolve_update(filtered, target_filters=[pl.col("uid") == "u1"]).counts() == {
        "new": 1,
        "stale": 0,
        "orphaned": 0,
        "failed": 0,
    }


def test_filter_errors_name_the_column_and_the_feature(make_store):
    bad = FeatureSpec(
        key="o/c",
        id_columns=("uid",),
        deps=(FeatureDep("o/b", filters=(pl.col("lang") == "en",)),),
        fields=(FieldSpec("z"),),
    )
    graph = FeatureGraph([A, B, bad])
    store = make_store(graph)
    _root(store, A, {"uid": ["u1"], "x": ["1"], "lang": ["en"]})
    _root(store, B, {"uid": ["u1"], "y": ["9"]})
    with pytest.raises(SamplesError, match=r"column\(s\) \['lang'\], which feature 'o/b'"):
        store.resolve_update(bad)
    ok = FeatureSpec(key="o/c", id_columns=("uid",), deps=("o/a", "o/b"), fields=(FieldSpec("z"),))
    store = make_store(FeatureGraph([A, B, ok]))
    _root(store, A, {"uid": ["u1"], "x": ["1"], "lang": ["en"]})
    _root(store, B, {"uid": ["u1"], "y": ["9"]})
    with pytest.raises(SamplesError, match=r"\['lang'\], which feature 'o/b' does not have"):
        store.resolve_update(ok, filters=[pl.col("lang") == "en"])
    with pytest.raises(SamplesError, match=r"target filter.*\['x'\], which feature 'o/c'"):
        store.resolve_update(ok, target_filters=[pl.col("x") == "1"])
