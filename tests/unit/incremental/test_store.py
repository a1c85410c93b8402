"""Stores: orphans and scoping, deletes, bad input, Delta format checks, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUND_1, raw_samples

from dagster_hpc.incremental import (
    HASH_ALGORITHM,
    DeltaStore,
    FeatureGraph,
    FeatureSpec,
    FieldSpec,
    HashAlgorithmMismatchError,
    SamplesError,
)

SRC = Path(__file__).resolve().parents[3] / "src" / "dagster_hpc" / "incremental"


def _load(store, rows):
    inc = store.resolve_update(RAW, samples=raw_samples(rows))
    store.write(RAW, inc.to_process())
    return inc


def test_partial_samples_report_the_rest_orphaned_unless_scoped(demo_store):
    _load(demo_store, ROUND_1)
    partial = raw_samples(ROUND_1[:1])

    unscoped = demo_store.resolve_update(RAW, samples=partial)
    assert sorted(unscoped.orphaned["sample_uid"]) == ["s2", "s3"]

    scoped = demo_store.resolve_update(
        RAW, samples=partial, scope=pl.col("sample_uid").is_in(["s1"])
    )
    assert scoped.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 0}


def test_orphans_stay_until_deleted(demo_store):
    _load(demo_store, ROUND_1)
    inc = demo_store.resolve_update(RAW, samples=raw_samples(ROUND_1[:2]))
    assert inc.orphaned["sample_uid"].to_list() == ["s3"]
    # Not deleted unless asked: still orphaned next time.
    again = demo_store.resolve_update(RAW, samples=raw_samples(ROUND_1[:2]))
    assert again.orphaned["sample_uid"].to_list() == ["s3"]
    assert demo_store.delete(RAW, again.orphaned) == 1
    assert sorted(demo_store.read(RAW)["sample_uid"]) == ["s1", "s2"]
    assert (
        demo_store.resolve_update(RAW, samples=raw_samples(ROUND_1[:2])).counts()["orphaned"] == 0
    )


def test_downstream_of_nothing_is_a_clear_error(demo_store):
    with pytest.raises(SamplesError, match="upstream feature 'demo/raw' was never written"):
        demo_store.resolve_update(DERIVED)


def test_written_but_empty_upstream_is_not_never_written(demo_store):
    demo_store.write(RAW, raw_samples(ROUND_1).clear().pipe(_with_prov, demo_store))
    assert demo_store.resolve_update(DERIVED).is_empty


def _with_prov(df, store):
    return store.resolve_update(RAW, samples=df).to_process()


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (None, "a root feature takes its provenance from samples="),
        (pl.DataFrame({"x": [1]}), r"samples lack id column\(s\) \['sample_uid'\]"),
        (pl.DataFrame({"sample_uid": ["a"]}), "need a 'provenance_by_field' struct"),
        (
            pl.DataFrame({"sample_uid": ["a"], "provenance_by_field": [{"value": "1"}]}),
            r"lacks field\(s\) \['file_uri', 'category'\]",
        ),
        (
            pl.DataFrame(
                {
                    "sample_uid": ["a", "a"],
                    "provenance_by_field": [{"file_uri": "u", "value": "1", "category": "c"}] * 2,
                }
            ),
            "duplicate ids",
        ),
        ({"sample_uid": ["a"]}, "must be a polars DataFrame"),
    ],
)
def test_bad_samples_rejected_before_anything_runs(demo_store, samples, message):
    with pytest.raises(SamplesError, match=message):
        demo_store.resolve_update(RAW, samples=samples)


def test_bad_writes_and_calls_rejected(demo_store):
    with pytest.raises(SamplesError, match="Write the frames that resolve_update returned"):
        demo_store.write(RAW, pl.DataFrame({"sample_uid": ["a"]}))
    with pytest.raises(SamplesError, match="samples= is for root features"):
        demo_store.resolve_update(DERIVED, samples=raw_samples(ROUND_1))
    with pytest.raises(SamplesError, match="scope must be a polars expression"):
        demo_store.resolve_update(RAW, samples=raw_samples(ROUND_1), scope="s1")  # type: ignore[arg-type]
    with pytest.raises(SamplesError, match="lacks id column"):
        demo_store.delete(RAW, pl.DataFrame({"x": [1]}))


def test_delta_table_records_hash_algorithm_and_refuses_another(tmp_path):
    store = DeltaStore(tmp_path, GRAPH)
    _load(store, ROUND_1)
    path = store.table_path(RAW)
    info = json.loads(DeltaTable(str(path)).metadata().description)
    assert info["hash_algorithm"] == HASH_ALGORITHM

    other = tmp_path / "foreign"
    other_store = DeltaStore(other, GRAPH)
    from deltalake import write_deltalake

    write_deltalake(
        str(other_store.table_path(RAW)),
        pl.DataFrame({"sample_uid": ["s1"]}).to_arrow(),
        description=json.dumps({"hash_algorithm": "md5"}),
    )
    with pytest.raises(HashAlgorithmMismatchError, match="hashed with 'md5'"):
        other_store.resolve_update(RAW, samples=raw_samples(ROUND_1))


def test_delta_upsert_keeps_one_row_per_sample_and_compacts(tmp_path):
    store = DeltaStore(tmp_path, GRAPH)
    _load(store, ROUND_1)
    changed = [dict(r, value=r["value"] + 1) for r in ROUND_1]
    _load(store, changed)
    current = store.read(RAW).sort("sample_uid")
    assert current["value"].to_list() == [2.0, 6.0, 13.0]
    store.compact(RAW)
    assert store.read(RAW).sort("sample_uid")["value"].to_list() == [2.0, 6.0, 13.0]
    assert store.resolve_update(RAW, samples=raw_samples(changed)).counts()["stale"] == 0


# Concurrent writers ---------------------------------------------------------------------------
WRITERS = 4
BATCHES_PER_WRITER = 5
ROWS_PER_BATCH = 50
_SHARED = FeatureSpec(key="shared", id_columns=("sample_uid",), fields=(FieldSpec("x"),))


def _writer(root: str, writer: int) -> None:
    store = DeltaStore(root, FeatureGraph([_SHARED]))
    for batch in range(BATCHES_PER_WRITER):
        uids = [f"w{writer}-b{batch}-{i}" for i in range(ROWS_PER_BATCH)]
        samples = pl.DataFrame(
            {"sample_uid": uids, "x": [f"{writer}.{batch}.{i}" for i in range(ROWS_PER_BATCH)]}
        )
        samples = samples.with_columns(pl.struct("x").alias("provenance_by_field"))
        inc = store.resolve_update(_SHARED, samples=samples, scope=pl.col("sample_uid").is_in(uids))
        store.write(_SHARED, inc.to_process())


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    table = DeltaStore(tmp_path, FeatureGraph([_SHARED])).read(_SHARED)
    expected = WRITERS * BATCHES_PER_WRITER * ROWS_PER_BATCH
    assert table.height == expected
    assert table["sample_uid"].n_unique() == expected
    # Every one of the writers' commits is in the log (nothing overwritten).
    history = DeltaTable(str(tmp_path / "shared")).history()
    assert sum(1 for h in history if h["operation"] == "MERGE") == WRITERS * BATCHES_PER_WRITER


def _same_ids_writer(root: str, writer: int) -> None:
    store = DeltaStore(root, FeatureGraph([_SHARED]))
    uids = [f"u{i}" for i in range(ROWS_PER_BATCH)]
    for batch in range(BATCHES_PER_WRITER):
        samples = pl.DataFrame({"sample_uid": uids, "x": [f"{writer}.{batch}"] * len(uids)})
        samples = samples.with_columns(pl.struct("x").alias("provenance_by_field"))
        store.write(_SHARED, store.resolve_update(_SHARED, samples=samples).to_process())


def test_concurrent_writers_of_the_same_samples_leave_one_row_each(tmp_path):
    # Races on table creation and on inserting the same new ids must not duplicate samples.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_same_ids_writer, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    table = DeltaStore(tmp_path, FeatureGraph([_SHARED])).read(_SHARED)
    assert table.height == ROWS_PER_BATCH
    assert table["sample_uid"].n_unique() == ROWS_PER_BATCH
    # Each row holds one writer's last batch, whole (no mix of half-applied merges).
    assert table["x"].n_unique() == 1 and table["x"][0].endswith(f".{BATCHES_PER_WRITER - 1}")


def test_incremental_package_never_imports_dagster():
    offenders = []
    for path in SRC.rglob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import)\s+dagster(\s|\.|$)(?!_hpc)", line) or re.match(
                r"\s*(from|import)\s+dagster_(?!hpc)", line
            ):
                offenders.append(f"{path.name}: {line.strip()}")
    assert offenders == []


def test_importing_the_engine_imports_neither_dagster_nor_ray():
    """Checked in a fresh interpreter: the engine runs on compute nodes without either."""
    import subprocess
    import sys

    code = (
        "import sys, dagster_hpc.incremental as m; "
        "m.DeltaStore, m.FeatureDep, m.Expansion; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('dagster', 'ray')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
