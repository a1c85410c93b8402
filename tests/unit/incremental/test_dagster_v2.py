"""Dagster side of v2: code version, DataVersion, failed samples in metadata, an expansion asset,
column schema, a root feature as an observable source."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from incremental_demo.features import DERIVED, GRAPH, RAW, compute_derived

from dagster_hpc.errors import ConfigError
from dagster_hpc.incremental import DeltaStore, FeatureGraph, FeatureSpec, FieldDep, FieldSpec
from dagster_hpc.incremental_dagster import (
    feature_code_version,
    incremental_asset,
    incremental_source,
)

from .test_dagster_helper import _metadata, _raw_asset, _run_round
from .test_lineage import CHUNKS, DOCS, LINEAGE_GRAPH

DATA_VERSION_TAG = "dagster/data_version"


def _data_version(result: dg.ExecuteInProcessResult, key: str) -> str:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(key.split("/"))
    ]
    return event.materialization.tags[DATA_VERSION_TAG]


def test_code_version_follows_the_fields():
    bumped = FeatureSpec(
        key=DERIVED.key,
        id_columns=DERIVED.id_columns,
        deps=DERIVED.deps,
        fields=(
            FieldSpec("result", code_version="2", deps=(FieldDep(RAW.key, ("value",)),)),
            DERIVED.fields[1],
        ),
    )
    before = feature_code_version(GRAPH, DERIVED)
    assert before == feature_code_version(GRAPH, DERIVED)  # stable
    assert before != feature_code_version(FeatureGraph([RAW, bumped]), bumped)
    asset = incremental_asset(
        DERIVED, graph=GRAPH, store_root="/tmp/unused", compute_fn=compute_derived
    )
    assert asset.code_versions_by_key[dg.AssetKey(["demo", "derived"])] == before
    with pytest.raises(ConfigError, match="bump FieldSpec.code_version"):
        incremental_asset(
            DERIVED, graph=GRAPH, store_root="/tmp/x", compute_fn=compute_derived, code_version="9"
        )


def test_data_version_changes_only_when_the_data_does(tmp_path):
    derived = incremental_asset(
        DERIVED,
        graph=GRAPH,
        store_root=tmp_path,
        compute_fn=lambda s: compute_derived(s).select("sample_uid", "result", "value_bucket"),
        orphans="delete",
    )
    assets = [_raw_asset(tmp_path), derived]
    one = _data_version(_run_round(assets, 1), DERIVED.key)
    again = _data_version(_run_round(assets, 1), DERIVED.key)
    two = _data_version(_run_round(assets, 2), DERIVED.key)
    three = _data_version(_run_round(assets, 3), DERIVED.key)
    assert one == again and two == three and one != two
    meta = _metadata(_run_round(assets, 3), DERIVED.key)
    schema = meta["dagster/column_schema"]
    assert {"sample_uid", "result", "provenance"} <= {c.name for c in schema.columns}


def test_failed_samples_in_metadata_and_retried(tmp_path):
    attempts = {"n": 0}

    def flaky(samples: pl.DataFrame) -> pl.DataFrame:
        attempts["n"] += 1
        out = compute_derived(samples).select("sample_uid", "result", "value_bucket")
        if attempts["n"] == 1:  # s2 fails the first time only
            return out.with_columns(
                pl.when(pl.col("sample_uid") == "s2").then(pl.lit("GPU fell over")).alias("error")
            )
        return out

    derived = incremental_asset(DERIVED, graph=GRAPH, store_root=tmp_path, compute_fn=flaky)
    assets = [_raw_asset(tmp_path), derived]
    meta = _metadata(_run_round(assets, 1), DERIVED.key)
    assert (meta["computed"], meta["failed"], meta["failed_ids"]) == (
        3,
        1,
        [{"sample_uid": "s2", "last_error": "GPU fell over", "failures": 1}],
    )
    meta = _metadata(_run_round(assets, 1), DERIVED.key)
    assert (meta["retried_failed"], meta["computed"], meta["failed"]) == (1, 1, 0)
    meta = _metadata(_run_round(assets, 1), DERIVED.key)
    assert (meta["retried_failed"], meta["computed"], meta["failed"]) == (0, 0, 0)


def test_expansion_asset_and_observable_source(tmp_path):
    texts = {"round": {"a": "x y z", "b": "w"}}

    def docs_samples(_context) -> pl.DataFrame:
        rows = texts["round"]
        return pl.DataFrame(
            {"doc_id": list(rows), "text": list(rows.values()), "title": ["t"] * len(rows)}
        ).with_columns(pl.struct("text", "title").alias("provenance_by_field"))

    def chunk(inputs: pl.DataFrame) -> pl.DataFrame:
        return (
            inputs.with_columns(pl.col("text").str.split(" ").alias("piece"))
            .explode("piece")
            .with_columns(pl.int_range(pl.len()).over("doc_id").alias("chunk"))
            .select("doc_id", "chunk", "piece")
        )

    source = incremental_source(
        DOCS, graph=LINEAGE_GRAPH, store_root=tmp_path, samples_fn=docs_samples, orphans="delete"
    )
    chunks = incremental_asset(CHUNKS, graph=LINEAGE_GRAPH, store_root=tmp_path, compute_fn=chunk)
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(
        assets=[source, chunks],
        jobs=[dg.define_asset_job("observe_docs", selection=[source.key])],
    )

    def observe() -> dg.ObserveResult:
        result = defs.get_job_def("observe_docs").execute_in_process(instance=instance)
        assert result.success
        record = instance.get_latest_data_version_record(source.key, is_source=True)
        return record.asset_observation.data_version

    first_version = observe()
    assert first_version == observe()  # nothing changed: same DataVersion
    run = dg.materialize([chunks, source], instance=instance, selection=[chunks])
    meta = _metadata(run, CHUNKS.key)
    assert (meta["new"], meta["computed"]) == (2, 2)
    texts["round"] = {"a": "x y", "b": "w"}
    assert observe() != first_version
    meta = _metadata(
        dg.materialize([chunks, source], instance=instance, selection=[chunks]), CHUNKS.key
    )
    assert (meta["new"], meta["stale"], meta["computed"], meta["skipped"]) == (0, 1, 1, 1)
    stored = DeltaStore(tmp_path, LINEAGE_GRAPH).read(CHUNKS).sort("doc_id", "chunk")
    assert stored.select("doc_id", "piece").rows() == [("a", "x"), ("a", "y"), ("b", "w")]
