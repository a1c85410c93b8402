"""``dagster-hpc env build|push|list|gc``: payload environments by hand (CI, debugging, cleanup).

    dagster-hpc env build --lock uv.lock [--kind wheelhouse] [--arch x86_64 --glibc 2.28]
    dagster-hpc env push  --lock uv.lock HOST [--remote-base ~/.dagster-hpc]
    dagster-hpc env list  HOST [--json]
    dagster-hpc env gc    HOST [--keep 5] [--dry-run]

Connection settings as for ``doctor`` (DAGSTER_HPC_SSH_* variables, flags override). ``build``
needs no connection when the target platform is given (--arch/--glibc/--python), otherwise it
probes the compute nodes once (cached).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from dagster_hpc import progress
from dagster_hpc.cli._connection import add_connection_arguments, resource_from_args
from dagster_hpc.envs.build import EnvSpec, build, bundle_cache_dir, plan
from dagster_hpc.envs.gc import DEFAULT_KEEP, gc, gc_local, list_entries
from dagster_hpc.envs.key import BUNDLE_KINDS, SELF_CONTAINED
from dagster_hpc.envs.platform import TargetPlatform, compute_node_platform
from dagster_hpc.envs.ship import EnvShipper
from dagster_hpc.errors import DagsterHpcError
from dagster_hpc.rundir import DEFAULT_REMOTE_ROOT

MB = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "env", help="build, push, list and garbage-collect payload environments"
    )
    sub = p.add_subparsers(dest="env_command", required=True)

    b = sub.add_parser("build", help="build the bundle locally (cached by content key)")
    _spec_arguments(b)
    add_connection_arguments(b, host_required=False)
    b.set_defaults(func=run_build)

    u = sub.add_parser(
        "push", help="build if needed and publish on the cluster (no-op when cached)"
    )
    _spec_arguments(u)
    add_connection_arguments(u, host_required=False)
    u.add_argument(
        "--remote-base",
        default=DEFAULT_REMOTE_ROOT,
        help="cache root on the cluster (envs/ below it)",
    )
    u.set_defaults(func=run_push)

    ls = sub.add_parser("list", help="entries on the cluster, most recently used first")
    add_connection_arguments(ls, host_required=False)
    ls.add_argument("--remote-base", default=DEFAULT_REMOTE_ROOT)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)

    g = sub.add_parser(
        "gc", help="remove all but the N most recently used entries (and those in use)"
    )
    add_connection_arguments(g, host_required=False)
    g.add_argument("--remote-base", default=DEFAULT_REMOTE_ROOT)
    g.add_argument(
        "--keep", type=int, default=DEFAULT_KEEP, help=f"entries to keep (default {DEFAULT_KEEP})"
    )
    g.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    g.add_argument(
        "--local",
        action="store_true",
        help="clean this machine's bundle cache instead (no connection)",
    )
    g.add_argument("--cache-dir", help="local cache (default ~/.cache/dagster-hpc)")
    g.set_defaults(func=run_gc)


def _spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lock", required=True, help="uv.lock (pyproject.toml beside it) or requirements.txt"
    )
    p.add_argument("--kind", default=SELF_CONTAINED, choices=BUNDLE_KINDS)
    p.add_argument(
        "--python-home",
        help="self-contained: CPython installation to copy (default: this Python's)",
    )
    p.add_argument(
        "--pack-command",
        help="kind=pack: command line with {project} {lock} {output} (split like a shell)",
    )
    p.add_argument(
        "--pack-python",
        default="env/bin/python",
        help="kind=pack: interpreter inside the unpacked bundle",
    )
    p.add_argument(
        "--arch", help="target CPU architecture (skips the compute-node probe with --glibc)"
    )
    p.add_argument("--glibc", help="target glibc, e.g. 2.28")
    p.add_argument("--python", help="target Python minor, e.g. 3.11")
    p.add_argument("--node-python", default="", help="wheelhouse: the compute nodes' python3 path")
    p.add_argument("--partition", help="partition whose nodes are probed")
    p.add_argument(
        "--srun-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra srun option for the probe/installs, e.g. --srun-option=--account=proj (repeatable)",
    )
    p.add_argument("--cache-dir", help="local cache (default ~/.cache/dagster-hpc)")


def _spec(args: argparse.Namespace) -> EnvSpec:
    import shlex

    return EnvSpec(
        lock=Path(args.lock),
        kind=args.kind,
        python_home=Path(args.python_home) if args.python_home else None,
        pack_command=tuple(shlex.split(args.pack_command)) if args.pack_command else (),
        pack_python=args.pack_python,
    )


def _cache(args: argparse.Namespace) -> Path | None:
    return Path(args.cache_dir) if getattr(args, "cache_dir", None) else None


def _platform(args: argparse.Namespace, transport_factory) -> TargetPlatform:
    if args.arch and args.glibc:
        return TargetPlatform(
            arch=args.arch,
            glibc=args.glibc,
            python=args.python or "3.11",
            node_python=args.node_python,
        )
    transport, cluster = transport_factory()
    return compute_node_platform(
        transport,
        cluster,
        partition=args.partition,
        python=args.python,
        cache_dir=_cache(args),
        options=tuple(args.srun_option),
    )


def _connect(args: argparse.Namespace):
    resource = resource_from_args(args)
    return resource.get_transport(), resource.to_target().label


def run_build(args: argparse.Namespace) -> int:
    try:
        p = plan(_spec(args), _platform(args, lambda: _connect(args)))
        started = time.monotonic()
        with progress.reporting(progress.BarProgress(sys.stderr)):
            bundle = build(p, cache_dir=_cache(args))
    except DagsterHpcError as exc:
        print(f"dagster-hpc env build: {exc}", file=sys.stderr)
        return 1
    cached = " (from the local cache)" if bundle.built_s == 0.0 else ""
    print(
        f"key      {p.key}\nkind     {p.kind}\npython   {p.python}\nplatform {p.platform.uv_python_platform()}\n"
        f"bundle   {bundle.archive} ({bundle.size / MB:.1f} MB){cached}\n"
        f"seconds  {time.monotonic() - started:.1f}"
    )
    return 0


def run_push(args: argparse.Namespace) -> int:
    try:
        transport, cluster = _connect(args)
        p = plan(_spec(args), _platform(args, lambda: (transport, cluster)))
        shipper = EnvShipper(
            transport,
            args.remote_base,
            cluster=cluster,
            cache_dir=_cache(args),
            partition=args.partition,
            slurm_options=tuple(args.srun_option),
        )
        with progress.reporting(progress.BarProgress(sys.stderr)):
            report = shipper.ensure(p)
    except DagsterHpcError as exc:
        print(f"dagster-hpc env push: {exc}", file=sys.stderr)
        return 1
    print(
        f"key       {p.key} ({p.kind})\nstatus    {report.status} (lookup: {report.lookup_status})\n"
        f"path      {report.ref.path}\npython    {report.ref.python}\n"
        f"uploaded  {report.bytes_uploaded / MB:.1f} MB in {report.roundtrips} round trip(s), "
        f"{report.seconds:.1f} s (build {report.build_s:.1f} s)"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        transport, _cluster = _connect(args)
        root, entries = list_entries(transport, args.remote_base)
    except DagsterHpcError as exc:
        print(f"dagster-hpc env list: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"root": root, "entries": [asdict(e) for e in entries]}, indent=2))
        return 0
    print(f"{root or args.remote_base + '/envs'}: {len(entries)} environment(s)")
    print(f"{'key':<26}{'kind':<16}{'python':<9}{'size MB':>9}  {'last used (UTC)':<20}state")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.last_used))
        state = "in use" if e.in_use else ("ok" if e.complete else "incomplete")
        print(
            f"{e.key:<26}{e.manifest.get('kind', '?'):<16}{e.manifest.get('python', '?'):<9}"
            f"{e.size_kb / 1024:>9.1f}  {used:<20}{state}"
        )
    return 0


def run_gc(args: argparse.Namespace) -> int:
    if args.local:
        bundles = bundle_cache_dir(_cache(args))
        if args.dry_run:
            print(
                f"--dry-run is not supported with --local; nothing removed from {bundles}",
                file=sys.stderr,
            )
            return 1
        for path in gc_local(bundles, keep=args.keep):
            print(f"removed {path}")
        return 0
    try:
        transport, _cluster = _connect(args)
        result = gc(transport, args.remote_base, keep=args.keep, dry_run=args.dry_run)
    except (DagsterHpcError, ValueError) as exc:
        print(f"dagster-hpc env gc: {exc}", file=sys.stderr)
        return 1
    for key in result["would_remove"]:
        print(f"would remove {key}")
    for key in result["removed"]:
        print(f"removed {key}")
    for key in result["busy"]:
        print(f"skipped {key} (being published right now)")
    for path in result["stale"]:
        print(f"removed leftover {path} (from a publish that died)")
    print(f"kept {len(result['kept'])}: {' '.join(result['kept'])}")
    return 0
