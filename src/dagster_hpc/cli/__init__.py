"""The ``dagster-hpc`` command. Each subcommand lives in its own module and registers here."""

from __future__ import annotations

import argparse
import importlib
import sys

# module name -> it defines ``register(subparsers)``; each registered parser sets ``func``.
SUBCOMMAND_MODULES: tuple[str, ...] = ("doctor", "login", "env", "render", "runs", "jobs", "cost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagster-hpc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"dagster_hpc.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
