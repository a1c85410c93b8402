"""``dagster-hpc render [OPTIONS] PAYLOAD [-- ARG ...]``: print job.sh and launch.sh as a run would.

Nothing is submitted. The script is public API: when a job misbehaves, read it first. It is
produced by the same code that writes a run's scripts, so it is what sbatch would receive, apart
from the run directory. ``--mode slurm`` uses the site settings in the environment
(``SlurmResource.from_env()``, with ``DAGSTER_HPC_ENV_*`` for ``env=``) merged with
``--asset``'s queue metadata and ``--queue KEY=VALUE`` overrides. Nothing connects unless an
environment is configured (its interpreter is in the script) or ``--check`` asks for the run's
preflight checks.
"""

from __future__ import annotations

import argparse
import sys

from dagster_hpc.errors import DagsterHpcError
from dagster_hpc.launchers import (
    BashLauncher,
    ExecLauncher,
    Launcher,
    PythonLauncher,
    RayLauncher,
    SrunLauncher,
    TorchrunLauncher,
)

LAUNCHERS: dict[str, type[Launcher]] = {
    "python": PythonLauncher,
    "bash": BashLauncher,
    "exec": ExecLauncher,
    # default settings (counts from the allocation); configure them in code for more
    "srun": SrunLauncher,
    "torchrun": TorchrunLauncher,
    "ray": RayLauncher,
}
# Exit code for input the command rejects (argparse uses the same for bad flags).
EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render", help="print the job script a run would submit (dry run)", description=__doc__
    )
    p.add_argument("payload", help="payload file (.py, shell script, executable)")
    p.add_argument(
        "args", nargs="*", help="payload arguments (after --; options go before PAYLOAD)"
    )
    p.add_argument("--mode", default="local", help="local (default) or slurm")
    p.add_argument("--launcher", choices=sorted(LAUNCHERS), help="default: by the payload's suffix")
    p.add_argument("--python", help="interpreter for Python payloads where the job runs")
    p.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Slurm request, e.g. mem=4G (repeatable)",
    )
    p.add_argument("--run-dir", default=None, help="run directory to show (default: a placeholder)")
    p.add_argument(
        "--asset",
        metavar="MODULE:NAME",
        help="the asset the payload belongs to (its job name and dagster-hpc/queue metadata)",
    )
    p.add_argument(
        "--check", action="store_true", help="slurm: also run the preflight checks a run does"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dagster_hpc.compute import DRY_RUN_DIR, ComputeResource

    try:
        queue = _queue(args.queue)
        resource = ComputeResource(mode=args.mode, python=args.python)
        launcher = LAUNCHERS[args.launcher]() if args.launcher else None
        text = resource.render_job_script(
            args.payload,
            launcher=launcher,
            args=args.args,
            queue=queue or None,
            run_dir=args.run_dir or DRY_RUN_DIR,
            asset=_asset(args.asset) if args.asset else None,
            check=args.check,
        )
    except DagsterHpcError as exc:
        print(f"dagster-hpc render: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(text, end="")
    return 0


def _queue(items: list[str]) -> dict[str, str]:
    from dagster_hpc.errors import ConfigError

    queue: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--queue takes KEY=VALUE (e.g. mem=4G), got {item!r}")
        queue[key.strip()] = value
    return queue


def _asset(spec: str):  # -> dg.AssetsDefinition
    """``package.module:name`` -> that AssetsDefinition (imported like Dagster's -m/-a)."""
    import importlib

    import dagster as dg

    from dagster_hpc.errors import ConfigError

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"--asset takes MODULE:NAME (e.g. my_project.assets:features), got {spec!r}"
        )
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--asset {spec}: cannot import it ({exc})") from exc
    if not isinstance(value, dg.AssetsDefinition):
        raise ConfigError(f"--asset {spec} is a {type(value).__name__}, not a Dagster asset")
    return value
