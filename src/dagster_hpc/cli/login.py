"""``dagster-hpc login HOST``: open the shared ControlMaster once, interactively.

Type the one-time code (or password) once; every later Dagster process on this machine
(OpenSSHTransport with the same settings) reuses this connection until it has been idle for
``--persist``. With ``$PREFIX_TOTP_SECRET`` / ``$PREFIX_PASSWORD`` set, no prompt is shown.
"""

from __future__ import annotations

import argparse
import sys

from dagster_hpc.cli._connection import add_connection_arguments, resource_from_args
from dagster_hpc.errors import DagsterHpcError
from dagster_hpc.transport.openssh import OpenSSHTransport


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "login",
        help="open the shared SSH master connection (type the OTP once)",
        description=__doc__,
    )
    add_connection_arguments(p, host_required=False)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="only report whether the master is open")
    g.add_argument("--exit", action="store_true", help="close the master (log out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        resource = resource_from_args(args, transport="openssh")
        transport = resource.get_transport()
        assert isinstance(transport, OpenSSHTransport)
        label = transport.target.label
        if args.check:
            alive = transport.master_alive()
            print(f"{label}: master {'open' if alive else 'NOT open'} ({transport.control_path})")
            return 0 if alive else 1
        if args.exit:
            transport.close_master()
            print(f"{label}: master closed")
            return 0
        opened = transport.open_master(interactive=sys.stdin.isatty())
        result = transport.run("true")
        if not result.ok:
            print(
                f"{label}: the master is open but a test command failed: {result.stderr.strip()}",
                file=sys.stderr,
            )
            return 1
    except DagsterHpcError as exc:
        print(f"dagster-hpc login: {exc}", file=sys.stderr)
        return 1
    state = "opened" if opened else "already open"
    print(
        f"{label}: master {state} at {transport.control_path}; it stays up until idle for "
        f"{transport.control_persist}. Dagster processes with transport='openssh' and the same settings reuse it."
    )
    return 0
