"""``dagster-hpc cost RUN_ID``: node-, CPU- and GPU-hours of a Dagster run, per job and asset.

Reads the run's event log from the Dagster instance ($DAGSTER_HOME): the ``slurm/*_hours``
metadata every Slurm job's materializations (and failed jobs' observations) carry. No cluster
connection is needed.
"""

from __future__ import annotations

import argparse
import json
import sys

from dagster_hpc.cost import RESOURCES, run_cost


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cost", help="node/CPU/GPU-hours of a Dagster run, per job and asset")
    p.add_argument("run_id", help="the Dagster run id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        if instance.get_run_by_id(args.run_id) is None:
            print(
                f"dagster-hpc cost: no run {args.run_id} in the Dagster instance at $DAGSTER_HOME",
                file=sys.stderr,
            )
            return 2
        cost = run_cost(instance, args.run_id)
    if args.json:
        print(json.dumps(cost.to_dict(), indent=2))
        return 0
    if not cost.jobs:
        print(f"run {args.run_id}: no Slurm jobs (local mode, or nothing ran)")
        return 0
    header = f"{'job':>10}  {'state':<13} {'node-h':>10} {'CPU-h':>10} {'GPU-h':>10}  assets"
    print(header)
    for j in cost.jobs:
        print(
            f"{j.job_id:>10}  {j.state:<13} {j.node_hours:>10.4f} {j.cpu_hours:>10.4f} "
            f"{j.gpu_hours:>10.4f}  {', '.join(j.assets)}"
        )
    totals = " ".join(f"{cost.total(r):>10.4f}" for r in RESOURCES)
    print(f"{'total':>10}  {'':<13} {totals}  ({len(cost.jobs)} jobs)")
    return 0
