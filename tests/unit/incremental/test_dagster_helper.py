"""The Dagster helper: only new + stale samples reach the computation; counts land in metadata.

In-process compute functions and a real payload through ComputeResource (local mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUNDS, compute_derived, raw_samples

from dagster_hpc import ComputeResource
from dagster_hpc.errors import ConfigError, PayloadError
from dagster_hpc.incremental import DeltaStore
from dagster_hpc.incremental_dagster import incremental_asset

ROUND_CONFIG = {"round": dg.Field(int, default_value=1)}


def _raw_asset(root: Path) -> dg.AssetsDefinition:
    return incremental_asset(
        RAW,
        graph=GRAPH,
        store_root=root,
        samples_fn=lambda ctx: raw_samples(ROUNDS[ctx.op_execution_context.op_config["round"] - 1]),
        orphans="delete",
        config_schema=ROUND_CONFIG,
    )


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(key.split("/"))
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _run_round(assets, number: int, resources=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        run_config={"ops": {"demo__raw": {"config": {"round": number}}}},
        resources=resources or {},
    )


COUNT_KEYS = ("new", "stale", "orphaned", "skipped", "computed")


def test_in_process_compute_gets_only_new_and_stale(tmp_path):
    seen: list[list[str]] = []

    def compute(samples: pl.DataFrame) -> pl.DataFrame:
        seen.append(sorted(samples["sample_uid"]))
        return compute_derived(samples).select("sample_uid", "result", "value_bucket")

    derived = incremental_asset(
        DERIVED, graph=GRAPH, store_root=tmp_path, compute_fn=compute, orphans="delete"
    )
    assets = [_raw_asset(tmp_path), derived]

    first = _run_round(assets, 1)
    assert {k: _metadata(first, DERIVED.key)[k] for k in COUNT_KEYS} == {
        "new": 3,
        "stale": 0,
        "orphaned": 0,
        "skipped": 0,
        "computed": 3,
    }
    second = _run_round(assets, 2)
    meta = _metadata(second, DERIVED.key)
    assert {k: meta[k] for k in COUNT_KEYS} == {
        "new": 1,
        "stale": 1,
        "orphaned": 1,
        "skipped": 1,
        "computed": 2,
    }
    assert meta["stale_data_changed"] == 1 and meta["orphans_deleted"] == 1
    third = _run_round(assets, 3)
    assert {k: _metadata(third, DERIVED.key)[k] for k in COUNT_KEYS} == {
        "new": 0,
        "stale": 0,
        "orphaned": 0,
        "skipped": 3,
        "computed": 0,
    }
    assert seen == [["s1", "s2", "s3"], ["s2", "s4"]]
    stored = DeltaStore(tmp_path, GRAPH).read(DERIVED).sort("sample_uid")
    assert stored["result"].to_list() == [1.0, 49.0, 400.0]


@pytest.fixture
def demo_module():
    """incremental_demo.assets binds its module-level assets to the store of the DAGSTER_HOME
    at import: import it afresh here and drop it afterwards, so a later test importing it under
    its own DAGSTER_HOME does not inherit this one's store (test_examples' main-job rounds)."""
    sys.modules.pop("incremental_demo.assets", None)
    from incremental_demo import assets as demo

    yield demo
    sys.modules.pop("incremental_demo.assets", None)


def test_payload_through_compute_resource_local_mode(tmp_path, demo_module):
    demo = demo_module

    assets = demo.build_assets(tmp_path)
    resources = {"compute": ComputeResource(mode="local", base_dir=str(tmp_path / "runs"))}
    first = _run_round(assets, 1, resources)
    meta = _metadata(first, DERIVED.key)
    assert meta["computed"] == 3 and meta["payload_rows_written"] == 3
    assert meta["engine_from"].endswith(
        "dagster_hpc_engine.zip/dagster_hpc/incremental/__init__.py"
    )
    second = _run_round(assets, 2, resources)
    meta = _metadata(second, DERIVED.key)
    assert (meta["new"], meta["stale"], meta["computed"], meta["payload_rows_written"]) == (
        1,
        1,
        2,
        2,
    )
    third = _run_round(assets, 3, resources)
    meta = _metadata(third, DERIVED.key)
    assert (meta["computed"], meta["skipped"]) == (0, 3)
    assert "payload_rows_written" not in meta  # nothing to do: the payload did not run
    stored = DeltaStore(tmp_path, GRAPH).read(DERIVED).sort("sample_uid")
    assert stored["result"].to_list() == [1.0, 49.0, 400.0]


def test_payload_that_does_not_write_is_reported(tmp_path):
    lazy_payload = tmp_path / "lazy.py"
    lazy_payload.write_text(
        "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes():\n    pass\n"
    )
    derived = incremental_asset(DERIVED, graph=GRAPH, store_root=tmp_path, payload=lazy_payload)
    resources = {"compute": ComputeResource(mode="local", base_dir=str(tmp_path / "runs"))}
    with pytest.raises(PayloadError, match=r"only 0 of the 3 samples"):
        _run_round([_raw_asset(tmp_path), derived], 1, resources)


def test_bad_helper_arguments_fail_at_definition_time(tmp_path):
    with pytest.raises(ConfigError, match="root feature: pass samples_fn"):
        incremental_asset(RAW, graph=GRAPH, store_root=tmp_path)
    with pytest.raises(ConfigError, match="needs payload= or compute_fn="):
        incremental_asset(DERIVED, graph=GRAPH, store_root=tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        incremental_asset(
            DERIVED, graph=GRAPH, store_root=tmp_path, payload="x.py", compute_fn=lambda d: d
        )
    with pytest.raises(ConfigError, match="orphans must be"):
        incremental_asset(
            DERIVED, graph=GRAPH, store_root=tmp_path, compute_fn=lambda d: d, orphans="purge"
        )
