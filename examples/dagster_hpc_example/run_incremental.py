"""The incremental seed demo as part of the main job: three rounds through Dagster.

Round 1 loads 3 samples, round 2 changes one value, adds one sample and removes one, round 3
changes nothing. Each round materializes ``demo/raw`` and ``demo/derived`` (whose payload runs
through ``ComputeResource``) and the summary shows what was computed and what was skipped.
The demo's store is recreated at every run of the main job, so round 1 always starts empty.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

ROUNDS = (1, 2, 3)
# the payloads' log lines (INFO) on the console, not Dagster's DEBUG event stream
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
COUNTS = ("new", "stale", "orphaned", "skipped", "computed")


def store_dir() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")
    return home / "incremental-demo-store"


def run_rounds(instance: dg.DagsterInstance) -> tuple[list[list[str]], bool]:
    """Materialize the demo three times; return summary rows and whether every round succeeded."""
    store = store_dir()
    shutil.rmtree(store, ignore_errors=True)
    from incremental_demo.assets import build_assets  # the store is passed explicitly below

    from dagster_hpc_example.resources import compute_from_env

    assets = build_assets(store)
    op_name = assets[0].op.name
    rows: list[list[str]] = []
    ok = True
    for number in ROUNDS:
        result = dg.materialize(
            assets,
            instance=instance,
            resources={"compute": compute_from_env()},
            run_config={"ops": {op_name: {"config": {"round": number}}}, **CONSOLE_INFO},
            raise_on_error=False,
        )
        ok = ok and result.success
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            md = {k: v.value for k, v in mat.metadata.items()}
            counts = [str(md.get(name, "-")) for name in COUNTS]
            label = mat.asset_key.to_user_string()
            rows.append([str(number), label, *counts])
        print(
            f"  incremental demo round {number}: {'SUCCESS' if result.success else 'FAILURE'}",
            flush=True,
        )
    return rows, ok


HEADER = ["round", "feature", *COUNTS]
