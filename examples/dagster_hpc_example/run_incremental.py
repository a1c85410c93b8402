"""The incremental seed demo as part of the main job: three rounds through Dagster.

Round 1 loads 3 samples, round 2 changes one value, adds one sample and removes one, round 3
changes nothing. Each round materializes ``demo/raw`` and ``demo/derived`` (whose payload runs
through ``ComputeResource``) and the summary shows what was computed and what was skipped.
The demo's store is recreated at every run of the main job, so round 1 always starts empty.
Each round is a run of ``incremental_demo_job`` from the ``incremental_demo.assets`` code
location (the UI re-executes it), with the store the UI uses too (``default_store_root``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from dagster_hpc.scripted_runs import execute_job_in_code_location

ROUNDS = (1, 2, 3)
# the payloads' log lines (INFO) on the console, not Dagster's DEBUG event stream
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# three tiny runs: a step subprocess each would cost more than the work
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
COUNTS = ("new", "stale", "orphaned", "skipped", "computed")


def store_dir() -> Path:
    from incremental_demo.assets import default_store_root

    return Path(default_store_root())


def run_rounds(instance: dg.DagsterInstance) -> tuple[list[list[str]], bool]:
    """Materialize the demo three times; return summary rows and whether every round succeeded."""
    from incremental_demo import assets as demo

    shutil.rmtree(demo.default_store_root(), ignore_errors=True)
    op_name = demo.incremental_demo_assets[0].op.name
    rows: list[list[str]] = []
    ok = True
    for number in ROUNDS:
        run_config = {"ops": {op_name: {"config": {"round": number}}}, **CONSOLE_INFO, **IN_PROCESS}
        result = execute_job_in_code_location(  # no `with`: no resource init after the run
            demo.__name__,
            demo.incremental_demo_job.name,
            instance=instance,
            working_directory=str(Path(demo.__file__).resolve().parent.parent),
            run_config=run_config,
        )
        events = result.get_asset_materialization_events()
        ok = ok and result.success
        for event in events:
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
