"""Materialize every example asset (all partitions too) and print a summary table.

``scripts/run-example`` calls this. Runs go through the default multiprocess executor into a
persistent Dagster instance (DAGSTER_HOME), so ``dagster dev`` shows them afterwards; each run
records the code location ``dagster dev -m dagster_hpc_example.definitions`` serves, so the UI's
"Re-execute" works on them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg

from dagster_hpc.scripted_runs import execute_job_in_code_location
from dagster_hpc_example import definitions, run_incremental
from dagster_hpc_example.resources import MODE_ENV, example_data_dir

# Metadata keys shown in the summary table (the rest is in the UI).
# The console shows the payloads' own log lines (INFO) but not Dagster's DEBUG event stream.
CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
IN_PROCESS = {**CONSOLE, "execution": {"config": {"in_process": {}}}}
SHOWN_METADATA = (
    "rows",
    "sensors",
    "mean_value",
    "top_sensor",
    "region",
    "dagster_hpc/elapsed_s",  # local mode
    "slurm/job_id",  # slurm mode: the job and its accounting
    "slurm/state",
    "slurm/elapsed_s",
    "slurm/cpu_efficiency_pct",
)


# only materializations of the runs started by this invocation are summarized (not older ones)
THIS_INVOCATION_RUNS: set[str] = set()


def main() -> int:
    instance = dg.DagsterInstance.get()
    print(
        f"dagster-hpc example: mode={os.environ.get(MODE_ENV, 'local')}, data in {example_data_dir()}"
    )
    runs: list[tuple[str, dg.DagsterRunStatus, float]] = []
    runs.append(_execute("hpc_example_job", instance, "unpartitioned assets", run_config=CONSOLE))
    for key in definitions.REGIONS.get_partition_keys():
        # one small run per partition: in-process (a step subprocess would cost more than the work)
        runs.append(
            _execute(
                "regional_job",
                instance,
                f"regional_measurements[{key}]",
                key,
                IN_PROCESS,
            )
        )
    demo_rows, demo_ok = ([], True)
    if os.environ.get(MODE_ENV, "local") == "local":
        # the seed demo of the incremental engine (its payload env for slurm: see the README)
        demo_rows, demo_ok = run_incremental.run_rounds(instance)
    print()
    print(
        _table(
            ["run", "status", "wall s"],
            [[name, status.value, f"{wall:.1f}"] for name, status, wall in runs],
        )
    )
    print()
    print(_table(["asset", "partition", "metadata"], _asset_rows(instance)))
    checks = _check_rows(instance)
    if checks:
        print()
        print(_table(["asset check", "result"], checks))
    if demo_rows:
        print("\nIncremental demo (only new + stale samples reach the payload):")
        print(_table(run_incremental.HEADER, demo_rows))
    home = os.environ.get("DAGSTER_HOME", "")
    print(
        "\nOpen the UI (shows these runs):\n"
        f"  DAGSTER_HOME={home} uv run --directory examples dagster dev -m dagster_hpc_example.definitions -m incremental_demo.assets\n"
        "  then browse http://127.0.0.1:3000"
    )
    all_ok = demo_ok and all(status == dg.DagsterRunStatus.SUCCESS for _, status, _ in runs)
    return 0 if all_ok else 1


def _execute(
    job_name: str,
    instance: dg.DagsterInstance,
    name: str,
    partition: str | None = None,
    run_config=None,
    module: str = definitions.__name__,
):
    tags = {"dagster/partition": partition} if partition else None
    started = time.monotonic()
    # not `with result:` (that would start the run's resources again, after RUN_SUCCESS, to
    # load outputs this summary does not need)
    result = execute_job_in_code_location(
        module,
        job_name,
        instance=instance,
        working_directory=str(Path(__file__).resolve().parent.parent),
        tags=tags,
        run_config=run_config,
    )
    status = instance.get_run_by_id(result.run_id).status
    wall = time.monotonic() - started
    print(f"  {name}: {status.value} in {wall:.1f} s (run {result.run_id[:8]})", flush=True)
    THIS_INVOCATION_RUNS.add(result.run_id)
    return name, status, wall


def _asset_rows(instance: dg.DagsterInstance) -> list[list[str]]:
    rows = []
    for spec in sorted(
        definitions.defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()
    ):
        partitions = spec.partitions_def.get_partition_keys() if spec.partitions_def else [None]
        for partition in partitions:
            event = _latest(instance, spec.key, partition)
            if event is None or event.run_id not in THIS_INVOCATION_RUNS:
                rows.append(
                    [spec.key.to_user_string(), partition or "-", "NOT MATERIALIZED by this run"]
                )
                continue
            md = event.asset_materialization.metadata
            shown = ", ".join(
                f"{k.split('/')[-1]}={md[k].value}" for k in SHOWN_METADATA if k in md
            )
            rows.append([spec.key.to_user_string(), partition or "-", shown])
    return rows


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].event_log_entry if records else None


def _check_rows(instance: dg.DagsterInstance) -> list[list[str]]:
    rows = []
    for check_key in definitions.defs.resolve_asset_graph().asset_check_keys:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [check_key]
        ).get(check_key)
        result = "no result" if record is None else record.status.value
        rows.append([f"{check_key.asset_key.to_user_string()}:{check_key.name}", result])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
