"""``dagster-hpc doctor``: can this machine run Dagster assets on that cluster? Plain-words answer.

Connects with the same settings as ``SSHConnectionResource.from_env`` (flags override) and asks,
in ONE remote command: the Slurm version, the partitions and their limits, whether accounting
(sacct) answers, whether the remote base directory is writable and whether flock (the submit
lock) is on the login node's PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field

from dagster_hpc.cli._connection import add_connection_arguments, resource_from_args
from dagster_hpc.errors import AuthenticationError, DagsterHpcError, HostKeyError
from dagster_hpc.rundir import DEFAULT_REMOTE_BASE, remote_path_expr
from dagster_hpc.settings import cli_flag
from dagster_hpc.transport.base import Transport

# The doctor's one remote command; generous because a busy slurmctld can take a while to answer.
DOCTOR_TIMEOUT_S = 60.0
# The Slurm backend's settings (SlurmResource.from_env), checked when set.
SLURM_ENV_PREFIX = "DAGSTER_HPC_SLURM"
_MARK = "@@dagster-hpc-doctor"
# partition|state|max time|default time|nodes|max nodes per job|CPUs/node|memory MB/node|GRES
_SINFO_FORMAT = "%P|%a|%l|%L|%D|%s|%c|%m|%G"


def doctor_script(remote_base: str | None) -> str:
    """The remote command (pure; each section ends with its exit code)."""
    base = remote_path_expr(remote_base or DEFAULT_REMOTE_BASE)  # what SlurmResource writes to
    return "\n".join(
        [
            f"echo {_MARK} version; sinfo --version 2>&1; echo {_MARK} rc $?",
            f"echo {_MARK} partitions; sinfo -h -o {shlex.quote(_SINFO_FORMAT)} 2>&1; echo {_MARK} rc $?",
            f"echo {_MARK} sacct; out=$(sacct -n -X -P -S now-1days -o JobID,State 2>&1); rc=$?; "
            f'printf "%s\\n" "$out" | head -n 3; echo {_MARK} rc $rc',
            f'echo {_MARK} base; b={base}; echo "$b"; mkdir -p "$b" 2>&1 && chmod 700 "$b" 2>&1 && '
            f't="$b/.doctor-$$" && touch "$t" 2>&1 && rm -f "$t"; echo {_MARK} rc $?',
            f"echo {_MARK} flock; command -v flock 2>&1; echo {_MARK} rc $?",
        ]
    )


@dataclass
class Partition:
    name: str
    default: bool
    available: str
    time_limit: str
    default_time: str
    nodes: int
    max_nodes_per_job: str
    cpus_per_node: str
    memory_mb_per_node: str
    gres: str


@dataclass
class DoctorReport:
    target: str
    slurm_version: str | None = None
    partitions: list[Partition] = field(default_factory=list)
    sacct_ok: bool = False
    sacct_detail: str = ""
    remote_base: str = ""
    base_writable: bool = False
    base_detail: str = ""
    flock_ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _sections(stdout: str) -> dict[str, tuple[int, list[str]]]:
    out: dict[str, tuple[int, list[str]]] = {}
    name, lines = None, []
    for line in stdout.splitlines():
        if line.startswith(_MARK + " "):
            word, _, rest = line[len(_MARK) + 1 :].partition(" ")
            if word == "rc" and name is not None:
                out[name] = (int(rest.strip() or 1), lines)
                name, lines = None, []
            else:
                name, lines = word, []
        elif name is not None:
            lines.append(line)
    return out


def parse_report(target: str, stdout: str, partition: str | None = None) -> DoctorReport:
    """Turn the script's output into a report with problems in plain words (pure).

    ``partition``: the one jobs will be sent to (if configured); it must exist.
    """
    r = DoctorReport(target=target)
    s = _sections(stdout)
    rc, lines = s.get("version", (127, []))
    m = re.search(r"slurm\S*\s+(\d+\.\d+(?:\.\d+)?)", " ".join(lines))
    if rc == 0 and m:
        r.slurm_version = m.group(1)
    else:
        r.problems.append(
            "Slurm commands do not work in a login shell on the cluster (`sinfo --version` failed: "
            f"{' '.join(lines)[:200] or 'no output'}). Ask your site which module or PATH provides them."
        )
    rc, lines = s.get("partitions", (1, []))
    if rc == 0:
        for line in lines:
            parts = line.split("|")
            if len(parts) != 9:
                continue
            name, state, max_time, def_time, nodes, max_nodes, cpus, mem, gres = parts
            r.partitions.append(
                Partition(name.rstrip("*"), name.endswith("*"), state, max_time, def_time,
                          int(nodes) if nodes.isdigit() else 0, max_nodes, cpus, mem, gres)
            )  # fmt: skip
        if not r.partitions:
            r.problems.append(
                "No partition is visible to this user: jobs cannot be submitted. Ask your site for access."
            )
        names = [p.name for p in r.partitions]
        if partition and r.partitions and partition not in names:
            r.problems.append(
                f"Partition {partition!r} (the one configured for jobs) does not exist here: use one of "
                f"{', '.join(names)} (DAGSTER_HPC_SLURM_PARTITION / QueueConfig.partition)."
            )
        for p in r.partitions:
            if p.available != "up":
                r.warnings.append(
                    f"Partition {p.name} is {p.available}: jobs sent there wait until it is up again."
                )
    elif r.slurm_version:
        r.problems.append(f"`sinfo` could not list partitions: {' '.join(lines)[:200]}")
    rc, lines = s.get("sacct", (1, []))
    r.sacct_ok = rc == 0
    r.sacct_detail = " ".join(lines)[:200]
    if not r.sacct_ok:
        r.warnings.append(
            "Accounting (sacct) does not answer"
            + (f" ({r.sacct_detail})" if r.sacct_detail else "")
            + ": jobs still run and their outcome comes from the job's exit-code file, but CPU "
            "efficiency, MaxRSS and node-hours will be reported as unavailable."
        )
    rc, lines = s.get("base", (1, []))
    r.remote_base = lines[0] if lines else ""
    r.base_writable = rc == 0
    r.base_detail = " ".join(lines[1:])[:200]
    if not r.base_writable:
        r.problems.append(
            f"The remote base directory {r.remote_base or '(unknown)'} is not writable"
            + (f" ({r.base_detail})" if r.base_detail else "")
            + ": run directories and environments cannot be staged. Choose another one "
            "(e.g. on your scratch file system) with --remote-base-dir / SlurmResource(remote_base_dir=...)."
        )
    rc, _lines = s.get("flock", (0, []))  # an older answer without the section: not a problem
    r.flock_ok = rc == 0
    if not r.flock_ok:
        r.problems.append(
            "flock is not on the login node's PATH: runs refuse to submit without it (it locks "
            "each staging + sbatch, so a re-execution after a killed Dagster process never "
            "submits a second job). Install util-linux there or put flock on PATH in the login shell."
        )
    return r


def render(r: DoctorReport) -> str:
    out = [f"dagster-hpc doctor: {r.target}", f"  Slurm version:   {r.slurm_version or 'unknown'}"]
    if r.partitions:
        out.append(
            "  Partitions:      name (default) | state | max time | default time | nodes | max nodes/job | "
            "CPUs/node | memory MB/node | GRES"
        )
        for p in r.partitions:
            out.append(
                f"    {p.name}{' (default)' if p.default else ''} | {p.available} | {p.time_limit} | {p.default_time} | "
                f"{p.nodes} | {p.max_nodes_per_job} | {p.cpus_per_node} | {p.memory_mb_per_node} | {p.gres}"
            )
    out.append(f"  Accounting:      {'sacct works' if r.sacct_ok else 'sacct NOT available'}")
    out.append(
        f"  Remote base dir: {r.remote_base} ({'writable' if r.base_writable else 'NOT writable'})"
    )
    out.append(f"  Submit lock:     {'flock found' if r.flock_ok else 'flock NOT found'}")
    for w in r.warnings:
        out.append(f"  WARNING: {w}")
    for p in r.problems:
        out.append(f"  PROBLEM: {p}")
    out.append(
        "  Verdict: "
        + ("ready to run jobs." if not r.problems else "not ready: fix the problems above.")
    )
    return "\n".join(out)


def run_doctor(
    transport: Transport, label: str, remote_base: str | None, partition: str | None = None
) -> DoctorReport:
    result = transport.run(doctor_script(remote_base), timeout=DOCTOR_TIMEOUT_S)
    return parse_report(label, result.stdout, partition)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the connection, Slurm, accounting and the remote base dir",
        description=__doc__,
    )
    add_connection_arguments(p, host_required=False)
    p.add_argument(
        "--transport", choices=("asyncssh", "openssh"), help="how to connect (default asyncssh)"
    )
    p.add_argument(
        cli_flag("remote_base_dir"),
        "--remote-base",  # the flag's name before one-name-per-setting
        dest="remote_base",
        help=f"remote base directory to check (default ${SLURM_ENV_PREFIX}_REMOTE_BASE_DIR, else {DEFAULT_REMOTE_BASE})",
    )
    p.add_argument(
        "--partition",
        help=f"partition jobs will use; must exist (default ${SLURM_ENV_PREFIX}_PARTITION)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        resource = resource_from_args(args)
        transport = resource.get_transport()
        remote_base = (
            args.remote_base or os.environ.get(f"{SLURM_ENV_PREFIX}_REMOTE_BASE_DIR") or None
        )
        partition = args.partition or os.environ.get(f"{SLURM_ENV_PREFIX}_PARTITION") or None
        report = run_doctor(transport, resource.to_target().label, remote_base, partition)
    except AuthenticationError as exc:
        print(f"PROBLEM: cannot log in. {exc}", file=sys.stderr)
        return 2
    except HostKeyError as exc:
        print(f"PROBLEM: the login node's identity could not be verified. {exc}", file=sys.stderr)
        return 2
    except DagsterHpcError as exc:
        print(f"PROBLEM: cannot reach the cluster. {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2) if args.json else render(report))
    return 1 if report.problems else 0
