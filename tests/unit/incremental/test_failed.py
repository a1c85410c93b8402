"""Failed samples (fail -> retried -> succeeds -> done), the staleness predicate, skip-comparison."""

from __future__ import annotations

import polars as pl
import pytest
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUND_1, raw_samples

from dagster_hpc.incremental import (
    FAILURES,
    LAST_ERROR,
    REASON_FAILED,
    REASON_PREDICATE,
    STALE_FIELDS,
    STALE_REASON,
    SamplesError,
    WriteSummary,
)

from .test_lineage import CHUNKS, LINEAGE_GRAPH, _docs


def _load_raw(store):
    store.write(RAW, store.resolve_update(RAW, samples=raw_samples(ROUND_1)).to_process())


def test_fail_retry_succeed(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    todo = store.resolve_update(DERIVED).to_process()
    results = todo.with_columns(
        pl.when(pl.col("sample_uid") == "s2").then(pl.lit("boom: bad input")).alias("error"),
        pl.lit(1.0).alias("result"),
    )
    summary = store.write_results(DERIVED, results)
    assert summary == WriteSummary(written=2, failed=1, failed_ids=({"sample_uid": "s2"},))
    # s2 is not done: it comes back, as failed (not new), with its error
    inc = store.resolve_update(DERIVED)
    assert inc.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 1}
    row = inc.failed.row(0, named=True)
    assert (row["sample_uid"], row[LAST_ERROR], row[FAILURES], row[STALE_REASON]) == (
        "s2",
        "boom: bad input",
        1,
        REASON_FAILED,
    )
    assert inc.to_process()["sample_uid"].to_list() == ["s2"]
    assert "error" not in store.read(DERIVED).columns
    # fails again: the count goes up
    store.write_failed(DERIVED, inc.to_process(), error="boom again")
    assert store.read_failed(DERIVED)[FAILURES].to_list() == [2]
    # succeeds: done, the record is gone
    store.write(
        DERIVED,
        store.resolve_update(DERIVED).to_process().with_columns(pl.lit(2.0).alias("result")),
    )
    assert store.resolve_update(DERIVED).is_empty
    assert store.read_failed(DERIVED).height == 0


def test_failed_recompute_keeps_the_last_good_result(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    store.write(
        DERIVED,
        store.resolve_update(DERIVED).to_process().with_columns(pl.lit(1.0).alias("result")),
    )
    changed = [dict(r) for r in ROUND_1]
    changed[0]["value"] = 42.0
    store.write(RAW, store.resolve_update(RAW, samples=raw_samples(changed)).to_process())
    inc = store.resolve_update(DERIVED)
    assert inc.stale["sample_uid"].to_list() == ["s1"]
    store.write_failed(DERIVED, inc.to_process(), error="oom")
    inc = store.resolve_update(DERIVED)
    assert inc.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 1}
    assert store.read(DERIVED).height == 3  # s1's previous result still readable


def test_write_failed_needs_an_error(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    with pytest.raises(SamplesError, match="need an 'error' column"):
        store.write_failed(DERIVED, store.resolve_update(DERIVED).to_process())


def test_failed_expansion_parent(make_store):
    store = make_store(LINEAGE_GRAPH)
    _docs(store, {"a": ("x y", "A"), "b": ("z", "B")})
    todo = store.resolve_update(CHUNKS).to_process()
    rows = todo.select("doc_id", "provenance_by_field", "provenance").join(
        pl.DataFrame(
            {
                "doc_id": ["a", "a", "b"],
                "chunk": [0, 1, None],
                "piece": ["x", "y", None],
                "error": [None, None, "unreadable"],
            },
            schema_overrides={"chunk": pl.Int64},
        ),
        on="doc_id",
    )
    summary = store.write_results(CHUNKS, rows, parents=todo)
    assert (summary.written, summary.failed) == (2, 1)
    inc = store.resolve_update(CHUNKS)
    assert inc.failed["doc_id"].to_list() == ["b"]
    assert inc.counts()["new"] == 0
    assert store.read(CHUNKS).height == 2


def test_stale_if_predicate(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    todo = store.resolve_update(DERIVED).to_process()
    store.write(
        DERIVED,
        todo.with_columns(
            pl.when(pl.col("sample_uid") == "s1")
            .then(pl.lit("v1"))
            .otherwise(pl.lit("v2"))
            .alias("model")
        ),
    )
    inc = store.resolve_update(DERIVED, stale_if=pl.col("model") == "v1")
    assert inc.stale["sample_uid"].to_list() == ["s1"]
    assert inc.stale[STALE_REASON].to_list() == [REASON_PREDICATE]
    assert inc.stale[STALE_FIELDS].to_list() == [list(DERIVED.field_keys)]
    with pytest.raises(SamplesError, match=r"\['nope'\], which feature 'demo/derived'"):
        store.resolve_update(DERIVED, stale_if=pl.col("nope") == 1)


def test_skip_comparison(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    store.write(DERIVED, store.resolve_update(DERIVED).to_process())
    inc = store.resolve_update(DERIVED, skip_comparison=True)
    assert inc.counts() == {"new": 3, "stale": 0, "orphaned": 0, "failed": 0}


def test_lazy_increment_matches_eager(make_store):
    store = make_store(GRAPH)
    _load_raw(store)
    todo = store.resolve_update(DERIVED).to_process()
    store.write_results(
        DERIVED,
        todo.with_columns(pl.when(pl.col("sample_uid") == "s3").then(pl.lit("x")).alias("error")),
    )
    lazy = store.resolve_update(DERIVED, lazy=True)
    assert isinstance(lazy.new, pl.LazyFrame)
    assert (
        lazy.counts()
        == store.resolve_update(DERIVED).counts()
        == {
            "new": 0,
            "stale": 0,
            "orphaned": 0,
            "failed": 1,
        }
    )
