"""Load test: a trivial payload with a few numbered Pipes messages (each must arrive once)."""

from dagster_pipes import open_dagster_pipes

MESSAGES = 3

with open_dagster_pipes() as pipes:
    for i in range(MESSAGES):
        pipes.log.info(f"load message {i}")
    pipes.report_asset_materialization(metadata={"messages": MESSAGES})
