"""The seed demo's three rounds, on both stores, plus field-level partial dependencies."""

from __future__ import annotations

import polars as pl
from incremental_demo.features import DERIVED, RAW, ROUND_1, ROUND_2, compute_derived, raw_samples
from incremental_demo.run_demo import run_round

from dagster_hpc.incremental import DATA_CHANGED_FIELDS, STALE_FIELDS, STALE_REASON


def test_three_demo_rounds(demo_store):
    store = demo_store

    first = run_round(store, ROUND_1)
    assert first[RAW.key] == {"new": 3, "stale": 0, "orphaned": 0, "failed": 0}
    assert first[DERIVED.key] == {"new": 3, "stale": 0, "orphaned": 0, "failed": 0}

    second = run_round(store, ROUND_2)
    assert second[RAW.key] == {"new": 1, "stale": 1, "orphaned": 1, "failed": 0}
    assert second[DERIVED.key] == {"new": 1, "stale": 1, "orphaned": 1, "failed": 0}

    third = run_round(store, ROUND_2)
    assert third[RAW.key] == {"new": 0, "stale": 0, "orphaned": 0, "failed": 0}
    assert third[DERIVED.key] == {"new": 0, "stale": 0, "orphaned": 0, "failed": 0}

    derived = store.read(DERIVED).sort("sample_uid")
    assert derived["sample_uid"].to_list() == ["s1", "s2", "s4"]
    assert derived["result"].to_list() == [1.0, 49.0, 400.0]


def test_round_two_says_which_fields_and_why(demo_store):
    store = demo_store
    run_round(store, ROUND_1)
    raw_inc = store.resolve_update(RAW, samples=raw_samples(ROUND_2))
    store.write(RAW, raw_inc.to_process())
    stale = store.resolve_update(DERIVED).stale
    assert stale["sample_uid"].to_list() == ["s2"]
    assert stale[STALE_FIELDS].to_list() == [["result", "value_bucket"]]
    assert stale[DATA_CHANGED_FIELDS].to_list() == [["result", "value_bucket"]]
    assert stale[STALE_REASON].to_list() == ["data_changed"]


def test_field_not_depended_on_leaves_downstream_up_to_date(demo_store):
    store = demo_store
    run_round(store, ROUND_1)
    moved = [dict(r, file_uri=r["file_uri"].replace("s3://demo", "s3://moved")) for r in ROUND_1]

    raw_inc = store.resolve_update(RAW, samples=raw_samples(moved))
    assert raw_inc.counts() == {"new": 0, "stale": 3, "orphaned": 0, "failed": 0}
    assert raw_inc.stale[STALE_FIELDS].to_list() == [["file_uri"]] * 3
    store.write(RAW, raw_inc.to_process())

    assert store.resolve_update(DERIVED).counts() == {
        "new": 0,
        "stale": 0,
        "orphaned": 0,
        "failed": 0,
    }


def test_category_change_makes_only_value_bucket_stale(demo_store):
    store = demo_store
    run_round(store, ROUND_1)
    changed = [dict(r, category="z") if r["sample_uid"] == "s1" else r for r in ROUND_1]
    store.write(RAW, store.resolve_update(RAW, samples=raw_samples(changed)).to_process())

    stale = store.resolve_update(DERIVED).stale
    assert stale["sample_uid"].to_list() == ["s1"]
    assert stale[STALE_FIELDS].to_list() == [["value_bucket"]]


def test_compute_derived_is_the_documented_formula():
    out = compute_derived(pl.DataFrame({"value": [3.0, 11.0], "category": ["a", "b"]}))
    assert out["result"].to_list() == [9.0, 121.0]
    assert out["value_bucket"].to_list() == ["a:low", "b:high"]


def test_lazy_and_eager_increments_agree(demo_store):
    store = demo_store
    run_round(store, ROUND_1)
    raw_inc = store.resolve_update(RAW, samples=raw_samples(ROUND_2))
    store.write(RAW, raw_inc.to_process())
    store.delete(RAW, raw_inc.orphaned)
    eager = store.resolve_update(DERIVED)
    lazy = store.resolve_update(DERIVED, lazy=True)
    assert isinstance(lazy.stale, pl.LazyFrame)
    collected = lazy.collect()
    for name in ("new", "stale", "orphaned"):
        left = getattr(eager, name).sort("sample_uid")
        right = getattr(collected, name).sort("sample_uid")
        assert left.equals(right), name
    assert collected.counts() == {"new": 1, "stale": 1, "orphaned": 1, "failed": 0}
