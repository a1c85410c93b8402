"""The seed demo as Dagster assets: ``demo/raw`` (root) and ``demo/derived`` (a payload).

Pick the round with run config ``{"ops": {"demo__raw": {"config": {"round": 2}}}}``; the
store lives in ``$DAGSTER_HPC_DEMO_STORE``, else ``$DAGSTER_HOME/incremental-demo-store`` (so
``./scripts/run-example`` and the UI it points to use the same store), else a directory under the
system temp dir. ``incremental_demo_job`` materializes both assets.
Import ``incremental_demo.assets.incremental_demo_assets`` into a Definitions object (with
examples/ on sys.path); ``defs`` loads standalone:

    uv run dagster dev -f examples/incremental_demo/assets.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # examples/, when loaded with `dagster dev -f`
    sys.path.insert(0, str(HERE.parent))

from dagster_hpc import ComputeResource  # noqa: E402
from dagster_hpc.incremental_dagster import incremental_asset  # noqa: E402
from incremental_demo.features import DERIVED, GRAPH, RAW, ROUNDS, raw_samples  # noqa: E402


def default_store_root() -> str:
    """One store per Dagster instance: the main job and the UI on it see the same samples."""
    explicit = os.environ.get("DAGSTER_HPC_DEMO_STORE")
    if explicit:
        return explicit
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return str(Path(home) / "incremental-demo-store")
    return str(Path(tempfile.gettempdir()) / "dagster-hpc-incremental-demo")


STORE_ROOT = default_store_root()
PAYLOAD = HERE / "derived_payload.py"
FEATURES_FILE = HERE / "features.py"


def demo_samples(context: dg.AssetExecutionContext) -> pl.DataFrame:
    round_number = context.op_execution_context.op_config["round"]
    return raw_samples(ROUNDS[round_number - 1])


def build_assets(store_root: str | Path = STORE_ROOT) -> list[dg.AssetsDefinition]:
    raw = incremental_asset(
        RAW,
        graph=GRAPH,
        store_root=store_root,
        samples_fn=demo_samples,
        orphans="delete",
        group_name="incremental_demo",
        config_schema={
            "round": dg.Field(int, default_value=1, description="demo round 1, 2 or 3"),
        },
        description="Root samples of the seed demo (file_uri, value, category).",
    )
    derived = incremental_asset(
        DERIVED,
        graph=GRAPH,
        store_root=store_root,
        payload=PAYLOAD,
        extra_files=[FEATURES_FILE],
        orphans="delete",
        group_name="incremental_demo",
        description="result = value**2 and value_bucket, computed only for new/stale samples.",
    )
    return [raw, derived]


incremental_demo_assets = build_assets()
incremental_demo_job = dg.define_asset_job(
    "incremental_demo_job", selection=dg.AssetSelection.groups("incremental_demo")
)

defs = dg.Definitions(
    assets=incremental_demo_assets,
    jobs=[incremental_demo_job],
    resources={"compute": ComputeResource(mode=os.environ.get("DAGSTER_HPC_MODE", "local"))},
)
