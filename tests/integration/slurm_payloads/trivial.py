"""The smallest Pipes payload: one materialization."""

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"ok": True})
