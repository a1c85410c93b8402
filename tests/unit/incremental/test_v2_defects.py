"""Regression tests for the four defects of issue 11 (each failed before its fix)."""

from __future__ import annotations

import shutil
import threading

import polars as pl
import pytest
from deltalake import DeltaTable
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUND_1, raw_samples

from dagster_hpc.incremental import (
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    DeltaStore,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
    SamplesError,
)


def _load(store, graph=GRAPH):
    store.write(RAW, store.resolve_update(RAW, samples=raw_samples(ROUND_1)).to_process())
    todo = store.resolve_update(DERIVED).to_process()
    store.write(DERIVED, todo.with_columns(pl.lit(1.0).alias("result")))


# 1. A schema-evolving write kept the table readable ------------------------------------------


def test_new_user_column_keeps_the_delta_table_readable(tmp_path):
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    store.write(DERIVED, store.read(DERIVED).with_columns(pl.lit("x").alias("note")))
    table = DeltaTable(str(store.table_path(DERIVED)))
    assert "note" in table.schema().to_arrow().names
    assert store.read(DERIVED)["note"].to_list() == ["x"] * 3
    assert store.resolve_update(DERIVED).is_empty


def test_files_of_two_schemas_read_as_one_table(tmp_path):
    """A sample added after a new field and a new user column lands in a file of the wider
    schema while the old file stays: reads and resolves see one table (nulls where a file
    lacks a column or a struct field), as the direct Parquet scan of the store must."""
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    wider = FeatureSpec(
        key=DERIVED.key,
        id_columns=DERIVED.id_columns,
        deps=DERIVED.deps,
        fields=(*DERIVED.fields, FieldSpec("extra", deps=(FieldDep(RAW.key, ("value",)),))),
    )
    store2 = DeltaStore(tmp_path, FeatureGraph([RAW, wider]))
    new_sample = {"sample_uid": "s9", "file_uri": "s3://demo/s9.bin", "value": 2.0, "category": "z"}
    store2.write(RAW, store2.resolve_update(RAW, samples=raw_samples([*ROUND_1, new_sample])).new)
    todo = store2.resolve_update(wider)
    assert todo.new["sample_uid"].to_list() == ["s9"]
    store2.write(
        wider, todo.new.with_columns(pl.lit(2.0).alias("result"), pl.lit("n").alias("note"))
    )
    assert len(DeltaTable(str(store2.table_path(wider))).file_uris()) == 2  # old + new file
    stored = store2.read(wider).sort("sample_uid")
    assert stored["note"].to_list() == [None, None, None, "n"]
    assert stored[PROVENANCE_BY_FIELD].struct.field("extra").is_null().to_list() == [
        True,
        True,
        True,
        False,
    ]
    inc = store2.resolve_update(wider)
    assert sorted(inc.stale["sample_uid"]) == ["s1", "s2", "s3"]
    assert inc.stale["stale_fields"].to_list() == [["extra"]] * 3
    assert inc.counts()["new"] == 0


def test_table_beyond_plain_parquet_is_read_through_the_delta_scan(tmp_path):
    """A table whose protocol needs more than plain Parquet (here: deletion vectors enabled)
    is not scanned as files but through polars' Delta scan; reads and resolves agree."""
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    before = store.read(DERIVED).sort("sample_uid")
    table = DeltaTable(str(store.table_path(DERIVED)))
    table.alter.set_table_properties({"delta.enableDeletionVectors": "true"})
    assert DeltaTable(str(store.table_path(DERIVED))).protocol().min_reader_version > 1
    assert store.read(DERIVED).sort("sample_uid").equals(before)
    assert store.resolve_update(DERIVED).is_empty


def test_new_field_keeps_the_delta_table_readable(tmp_path):
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    wider = FeatureSpec(
        key=DERIVED.key,
        id_columns=DERIVED.id_columns,
        deps=DERIVED.deps,
        fields=(*DERIVED.fields, FieldSpec("extra", deps=(FieldDep(RAW.key, ("value",)),))),
    )
    store2 = DeltaStore(tmp_path, FeatureGraph([RAW, wider]))
    inc = store2.resolve_update(wider)
    assert inc.stale["stale_fields"].to_list() == [["extra"]] * 3
    store2.write(wider, inc.to_process().with_columns(pl.lit(3.0).alias("result")))
    assert store2.resolve_update(wider).is_empty
    assert store2.read(wider).height == 3


def test_reader_between_two_commits_sees_a_valid_table(tmp_path):
    """Readers running while schema-evolving writes commit never see a table without marker."""
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop():
        reader = DeltaStore(tmp_path, GRAPH)
        while not stop.is_set():
            try:
                reader.read(DERIVED)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for i in range(4):
            store.write(DERIVED, store.read(DERIVED).with_columns(pl.lit(i).alias(f"col{i}")))
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_table_broken_by_an_earlier_version_is_readable_again(tmp_path):
    """A table whose description an older version lost (no marker file) is read via version 0."""
    store = DeltaStore(tmp_path, GRAPH)
    _load(store)
    (store.table_path(DERIVED) / "_dagster_hpc_incremental.json").unlink()
    store.write(DERIVED, store.read(DERIVED).with_columns(pl.lit("y").alias("late")))
    assert DeltaTable(str(store.table_path(DERIVED))).metadata().description is None
    assert store.read(DERIVED).height == 3


# 2. Downstream of an unwritten upstream: a clear error, nothing deleted ----------------------


@pytest.mark.parametrize("id_dtype", [pl.String, pl.Int64])
def test_unwritten_upstream_is_an_error_and_deletes_nothing(tmp_path, id_dtype):
    raw = FeatureSpec(key="t/raw", id_columns=("uid",), fields=(FieldSpec("v"),))
    down = FeatureSpec(key="t/down", id_columns=("uid",), deps=("t/raw",), fields=(FieldSpec("w"),))
    graph = FeatureGraph([raw, down])
    store = DeltaStore(tmp_path, graph)
    samples = pl.DataFrame({"uid": pl.Series([1, 2]).cast(id_dtype), "v": ["a", "b"]})
    samples = samples.with_columns(pl.struct("v").alias(PROVENANCE_BY_FIELD))
    store.write(raw, store.resolve_update(raw, samples=samples).to_process())
    store.write(down, store.resolve_update(down).to_process())
    shutil.rmtree(store.table_path(raw))  # e.g. a new store root for the upstream only
    with pytest.raises(SamplesError, match="upstream feature 't/raw' was never written"):
        store.resolve_update(down)
    assert store.read(down).height == 2


# 3. load_upstream with a column name in two upstream features -------------------------------


def test_load_upstream_refuses_a_column_in_two_upstreams(tmp_path):
    a = FeatureSpec(key="t/a", id_columns=("uid",), fields=(FieldSpec("x"),))
    b = FeatureSpec(key="t/b", id_columns=("uid",), fields=(FieldSpec("y"),))
    c = FeatureSpec(key="t/c", id_columns=("uid",), deps=("t/a", "t/b"), fields=(FieldSpec("z"),))
    graph = FeatureGraph([a, b, c])
    store = DeltaStore(tmp_path, graph)
    for spec, value in ((a, "from-a"), (b, "from-b")):
        df = pl.DataFrame({"uid": ["u1"], "value": [value]})
        df = df.with_columns(
            pl.struct(pl.col("value").alias(spec.fields[0].key)).alias(PROVENANCE_BY_FIELD)
        )
        store.write(spec, store.resolve_update(spec, samples=df).to_process())
    todo = store.resolve_update(c).to_process()
    with pytest.raises(SamplesError, match=r"\['value'\] are in both 't/a' and 't/b'"):
        store.load_upstream(c, todo)
    both = store.load_upstream(c, todo, qualify=True)
    assert both.row(0, named=True) == {
        "uid": "u1",
        "t__a__value": "from-a",
        "t__b__value": "from-b",
    }


# 4. data_version defaults to the provenance, per field and per sample ----------------------


def test_data_version_equals_provenance_without_override(make_store):
    store = make_store(GRAPH)
    _load(store)
    for spec in (RAW, DERIVED):
        stored = store.read(spec)
        assert stored[DATA_VERSION].to_list() == stored[PROVENANCE].to_list()
        assert stored[DATA_VERSION_BY_FIELD].to_list() == stored[PROVENANCE_BY_FIELD].to_list()
