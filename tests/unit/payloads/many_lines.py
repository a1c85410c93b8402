"""Prints N numbered lines (argv[1]) to stdout, with Pipes open, then reports the count."""

import sys

from dagster_pipes import open_dagster_pipes

n = int(sys.argv[1])
with open_dagster_pipes() as pipes:
    for i in range(n):
        print(f"line {i:05d}")
    pipes.report_asset_materialization(metadata={"printed": n})
