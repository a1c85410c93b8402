"""The benchmark's trivial payload: open Pipes, report one materialization, exit."""

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"ok": 1})
