"""``dagster-hpc runs gc --older-than 7d``: remove old run directories, here and on the cluster.

    dagster-hpc runs gc --older-than 7d                 # local mode's run dirs on this machine
    dagster-hpc runs gc --older-than 7d HOST            # ... and the cluster's (login node HOST)
    dagster-hpc runs gc --older-than 2w --dry-run HOST  # only print what would go
    dagster-hpc runs gc --older-than 7d --cluster-here  # this machine is the login node

The cluster is reached as for ``doctor`` (DAGSTER_HPC_SSH_* variables, flags override); a
cluster is cleaned when HOST is given or DAGSTER_HPC_SSH_HOST is set. A run dir whose job is still
in squeue is never touched. Local run dirs belong to local-mode steps, which die with their
Dagster process: only their age counts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dagster_hpc.backends.local import default_local_base_dir
from dagster_hpc.backends.slurm_resource import DEFAULT_ENV_PREFIX as SLURM_ENV_PREFIX
from dagster_hpc.cli._connection import add_connection_arguments, resource_from_args
from dagster_hpc.errors import DagsterHpcError
from dagster_hpc.rundir import DEFAULT_REMOTE_BASE, remote_path_expr
from dagster_hpc.runs_gc import GcPlan, gc_run_dirs, parse_age
from dagster_hpc.settings import cli_flag, env_suffix
from dagster_hpc.transport.local import LocalTransport

# the setting SlurmResource.remote_base_dir: its variable and flag (settings.py derives both)
REMOTE_BASE_ENV = f"{SLURM_ENV_PREFIX}_{env_suffix('remote_base_dir')}"
REMOTE_BASE_FLAG = cli_flag("remote_base_dir")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("runs", help="manage run directories (local and on the cluster)")
    sub = p.add_subparsers(dest="runs_command", required=True)
    g = sub.add_parser(
        "gc", help="remove run directories older than an age (never those of queued/running jobs)"
    )
    g.add_argument(
        "--older-than", required=True, help="age of the newest file in a run dir, e.g. 7d, 12h, 2w"
    )
    g.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    g.add_argument(
        "--local-base", help="local mode's run dirs (default: the per-user temp directory)"
    )
    g.add_argument(
        "--no-local", action="store_true", help="leave this machine's local-mode run dirs alone"
    )
    g.add_argument(
        REMOTE_BASE_FLAG,
        "--remote-base",  # the flag's name before one-name-per-setting
        dest="remote_base",
        default=os.environ.get(REMOTE_BASE_ENV) or DEFAULT_REMOTE_BASE,
        help=f"run dirs on the cluster (default ${REMOTE_BASE_ENV} or {DEFAULT_REMOTE_BASE})",
    )
    g.add_argument(
        "--cluster-here",
        action="store_true",
        help="this machine is the login node (SlurmResource(ssh=None)): clean --remote-base-dir here, squeue checked",
    )
    add_connection_arguments(g, host_required=False)
    g.set_defaults(func=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    try:
        older_than_s = parse_age(args.older_than)
        if not args.no_local:
            base = Path(args.local_base) if args.local_base else default_local_base_dir()
            plan = gc_run_dirs(
                LocalTransport(),
                remote_path_expr(str(base.absolute())),
                older_than_s=older_than_s,
                with_squeue=False,
                dry_run=args.dry_run,
            )
            _report(f"local {base}", plan, args)
        if args.cluster_here:
            plan = gc_run_dirs(
                LocalTransport(),
                remote_path_expr(args.remote_base),
                older_than_s=older_than_s,
                with_squeue=True,
                dry_run=args.dry_run,
            )
            _report(f"this login node:{args.remote_base}", plan, args)
        elif args.host or os.environ.get(f"{args.env_prefix}_HOST"):
            resource = resource_from_args(args)
            with resource.get_transport() as transport:
                plan = gc_run_dirs(
                    transport,
                    remote_path_expr(args.remote_base),
                    older_than_s=older_than_s,
                    with_squeue=True,
                    dry_run=args.dry_run,
                )
            _report(f"{resource.host}:{args.remote_base}", plan, args)
    except DagsterHpcError as exc:
        print(f"dagster-hpc runs gc: {exc}", file=sys.stderr)
        return 1
    return 0


def _report(where: str, plan: GcPlan, args: argparse.Namespace) -> None:
    verb = "would remove" if args.dry_run else "removed"
    for path in plan.remove:
        print(f"{verb} {path}")
    for path in plan.active:
        print(f"kept {path} (its job is still in squeue)")
    print(
        f"runs gc {where}: {verb} {len(plan.remove)} run dir(s); kept {len(plan.active)} with a job in squeue, "
        f"{len(plan.recent)} newer than {args.older_than}"
    )
