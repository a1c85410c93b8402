"""The Ray Data sink with a real local Ray (its own temp dir, HOME and loopback address)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import polars as pl
import pytest
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUND_1, raw_samples

from dagster_hpc.incremental import (
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    DeltaStore,
    Expansion,
    FeatureDep,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
    IncrementalWriteError,
)

ray = pytest.importorskip("ray")  # in the dev group; a missing Ray is a broken environment
from dagster_hpc.incremental.ray_sink import IncrementalDatasink  # noqa: E402

# Ray's socket paths must stay under the 107-byte AF_UNIX limit: a short temp dir.
RAY_CPUS = 2
# A loopback address of its own, apart from other Ray instances on 127.0.0.1.
RAY_NODE_IP = "127.0.0.2"
DOCS = FeatureSpec(key="r/docs", id_columns=("doc_id",), fields=(FieldSpec("text"),))
CHUNKS = FeatureSpec(
    key="r/chunks",
    id_columns=("doc_id", "chunk"),
    deps=(FeatureDep("r/docs", lineage=Expansion(on=("doc_id",))),),
    fields=(FieldSpec("piece", deps=(FieldDep("r/docs", ("text",)),)),),
)
EXPANSION_GRAPH = FeatureGraph([DOCS, CHUNKS])


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One Ray for the module (a start costs seconds on 2 cores), stopped at its end."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        # the workers unpickle the graph, so they import the demo's features module
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
        ray.init(
            num_cpus=RAY_CPUS,
            include_dashboard=False,
            _temp_dir=temp_dir,
            _node_ip_address=RAY_NODE_IP,
            log_to_driver=False,
        )
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _todo(store):
    store.write(RAW, store.resolve_update(RAW, samples=raw_samples(ROUND_1 * 1)).to_process())
    return store.resolve_update(DERIVED).to_process()


def test_sink_writes_records_failures_raises_and_retries(tmp_path, local_ray):
    store = DeltaStore(tmp_path / "store", GRAPH)
    todo = _todo(store)  # s1, s2, s3

    def compute(batch):
        out = pl.from_arrow(batch)
        # the batch holding s2 fails as a whole (e.g. its converter crashed)
        failing = "s2" in out["sample_uid"].to_list()
        return out.with_columns(
            pl.lit(1.0).alias("result"),
            pl.lit("converter crashed" if failing else None, dtype=pl.String).alias("error"),
        ).to_arrow()

    ds = (
        ray.data.from_arrow(todo.to_arrow())
        .repartition(3)
        .map_batches(compute, batch_format="pyarrow", batch_size=1)
    )
    sink = IncrementalDatasink(tmp_path / "store", GRAPH, DERIVED, min_rows_per_write=None)
    with pytest.raises(
        IncrementalWriteError, match=r"1 sample\(s\) of 'demo/derived' failed"
    ) as info:
        ds.write_datasink(sink, concurrency=sink.max_concurrency)
    assert info.value.failed_ids == ({"sample_uid": "s2"},)
    assert (sink.summary.written, sink.summary.failed) == (2, 1)
    inc = store.resolve_update(DERIVED)
    assert inc.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 1}
    assert sorted(store.read(DERIVED)["sample_uid"]) == ["s1", "s3"]

    # next run: only s2, and it succeeds
    retry = ray.data.from_arrow(inc.to_process().to_arrow()).map_batches(
        lambda b: pl.from_arrow(b).with_columns(pl.lit(2.0).alias("result")).to_arrow(),
        batch_format="pyarrow",
    )
    sink = IncrementalDatasink(tmp_path / "store", GRAPH, DERIVED)
    retry.write_datasink(sink, concurrency=sink.max_concurrency)
    assert (sink.summary.written, sink.summary.failed) == (1, 0)
    assert store.resolve_update(DERIVED).is_empty


def test_sink_block_whose_write_raises_marks_nothing_done(tmp_path, local_ray):
    store = DeltaStore(tmp_path / "store", GRAPH)
    todo = _todo(store)
    # rows without their provenance cannot be written: the task raises, nothing is done
    ds = ray.data.from_arrow(todo.drop("provenance").to_arrow())
    sink = IncrementalDatasink(tmp_path / "store", GRAPH, DERIVED, raise_on_failed=False)
    with pytest.raises(Exception, match="lack column"):
        ds.write_datasink(sink, concurrency=1)
    assert store.resolve_update(DERIVED).counts()["new"] == 3


def test_sink_parents_records_childless_parents_done(tmp_path, local_ray):
    """parents=: a document with no chunk reaches no write task; the driver records it done.
    A document whose row failed stays failed, and one with chunks is written as usual."""
    store = DeltaStore(tmp_path / "store", EXPANSION_GRAPH)
    docs = pl.DataFrame({"doc_id": ["a", "b", "e", "f"], "text": ["x y", "boom", "", ""]})
    samples = docs.with_columns(pl.struct("text").alias(PROVENANCE_BY_FIELD))
    store.write(DOCS, store.resolve_update(DOCS, samples=samples).to_process())
    todo = store.resolve_update(CHUNKS).to_process()
    keep = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE)
    rows = pl.concat(
        [
            keep.filter(pl.col("doc_id") == "a").join(
                pl.DataFrame({"doc_id": ["a", "a"], "chunk": [0, 1], "piece": ["x", "y"]}),
                on="doc_id",
            ),
            keep.filter(pl.col("doc_id") == "b").with_columns(
                pl.lit(None, dtype=pl.Int64).alias("chunk"),
                pl.lit(None, dtype=pl.String).alias("piece"),
                pl.lit("converter crashed").alias("error"),
            ),
        ],
        how="diagonal_relaxed",
    )
    sink = IncrementalDatasink(
        tmp_path / "store", EXPANSION_GRAPH, CHUNKS, parents=todo, raise_on_failed=False
    )
    ray.data.from_arrow(rows.to_arrow()).write_datasink(sink, concurrency=1)
    assert sink.empty_parents == 2  # e and f
    assert (sink.summary.written, sink.summary.failed) == (2, 1)
    inc = store.resolve_update(CHUNKS)
    assert inc.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 1}
    assert inc.failed["doc_id"].to_list() == ["b"]


def test_sink_parents_refused_for_one_row_per_sample_features(tmp_path):
    with pytest.raises(ValueError, match="parents= is for expansion features"):
        IncrementalDatasink(tmp_path, GRAPH, DERIVED, parents=pl.DataFrame({"sample_uid": []}))
    with pytest.raises(ValueError, match=r"parents lack column\(s\) \['provenance'"):
        IncrementalDatasink(
            tmp_path, EXPANSION_GRAPH, CHUNKS, parents=pl.DataFrame({"doc_id": ["a"]})
        )
