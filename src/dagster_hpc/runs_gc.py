"""Garbage-collect old run directories (``dagster-hpc runs gc --older-than 7d``).

Run directories live at ``<base>/<run id>/<step>-<suffix>``. One round trip lists every step
directory with the newest modification time of anything inside it (a job still writing its log
counts as recent), together with the working directories of our jobs still known to squeue;
a second removes the chosen ones (each path quoted) and their then-empty run-id parents. A run
directory whose job is still in squeue is never touched; if squeue cannot answer, nothing is
removed. Ages are measured with the clock of the machine that holds the files.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from dagster_hpc import sh
from dagster_hpc.errors import ConfigError, RemoteCommandError
from dagster_hpc.rundir import check_removable
from dagster_hpc.transport.base import Transport

# Listing walks every file of every run dir (find + sort on the far side): minutes on a slow
# shared filesystem with thousands of runs.
LIST_TIMEOUT_S = 600.0
# rm -rf of many directories on a parallel filesystem is slow too.
REMOVE_TIMEOUT_S = 600.0
AGE_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# the markers sh/runs_gc_list.sh prints
_NOW, _SQ_RC, _JOB, _DIR, _NO_BASE = "#now ", "#squeue_rc=", "#job ", "#dir ", "#nobase"


def parse_age(text: str) -> float:
    """'7d' -> seconds (units s, m, h, d, w)."""
    match = _AGE_RE.match(text or "")
    if not match:
        raise ConfigError(
            f"--older-than {text!r} is not an age: use a number and a unit, e.g. 7d, 12h, 30m, 2w"
        )
    return float(match.group(1)) * AGE_UNITS_S[match.group(2)]


@dataclass(frozen=True)
class Listing:
    now: float  # the file side's clock
    dirs: dict[str, float]  # step run dir -> newest mtime inside it
    active_workdirs: frozenset[str] | None  # None: squeue was not asked (local base)
    squeue_error: str = ""


@dataclass
class GcPlan:
    remove: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)  # job still in squeue
    recent: list[str] = field(default_factory=list)  # newer than the cut-off


def list_command(base_expr: str, *, with_squeue: bool) -> str:
    """One round trip: the clock, (our squeue jobs' working dirs), every step run dir with the
    newest mtime inside it. ``base_expr`` is a quoted shell word (``remote_path_expr``)."""
    return sh.command("runs_gc_list.sh", base_expr, "1" if with_squeue else "0")


def parse_listing(stdout: str, *, with_squeue: bool) -> Listing | None:
    """None when the base directory does not exist (nothing to collect)."""
    now = 0.0
    dirs: dict[str, float] = {}
    workdirs: set[str] = set()
    rc: int | None = None
    errors: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(_NO_BASE):
            return None
        if line.startswith(_NOW):
            now = float(line[len(_NOW) :])
        elif line.startswith(_SQ_RC):
            rc = int(line[len(_SQ_RC) :] or "1")
        elif line.startswith(_JOB):
            job_id, _, workdir = line[len(_JOB) :].partition("|")
            if job_id.strip().isdigit() and workdir.strip():
                workdirs.add(workdir.strip().rstrip("/"))
            elif line[len(_JOB) :].strip():
                errors.append(line[len(_JOB) :].strip())
        elif line.startswith(_DIR):
            stamp, _, path = line[len(_DIR) :].partition(" ")
            if path and stamp.isdigit():
                dirs[path.rstrip("/")] = float(stamp)
    if not with_squeue:
        return Listing(now, dirs, None)
    if rc != 0:
        return Listing(
            now, dirs, frozenset(), squeue_error="\n".join(errors) or f"squeue exited {rc}"
        )
    return Listing(now, dirs, frozenset(workdirs))


def plan_gc(listing: Listing, *, older_than_s: float) -> GcPlan:
    """Which run dirs go (pure). Active jobs win over age; an unanswered squeue removes nothing."""
    if listing.squeue_error:
        raise RemoteCommandError(
            "squeue --me", 1, "", listing.squeue_error,
            hint="runs gc never removes a run dir without knowing which jobs still run; retry when squeue works",
        )  # fmt: skip
    plan = GcPlan()
    active = listing.active_workdirs or frozenset()
    for path, newest in sorted(listing.dirs.items()):
        if path in active or any(w.startswith(path + "/") for w in active):
            plan.active.append(path)
        elif listing.now - newest < older_than_s:
            plan.recent.append(path)
        else:
            plan.remove.append(path)
    return plan


def remove_command(paths: list[str]) -> str:
    for path in paths:
        check_removable(path)
    quoted = " ".join(shlex.quote(p) for p in paths)
    parents = " ".join(sorted({shlex.quote(p.rsplit("/", 1)[0]) for p in paths}))
    # a run-id directory whose step dirs are all gone goes too (rmdir refuses non-empty ones)
    return f'rm -rf -- {quoted} && for p in {parents}; do rmdir -- "$p" 2>/dev/null || true; done'


def gc_run_dirs(
    transport: Transport,
    base_expr: str,
    *,
    older_than_s: float,
    with_squeue: bool,
    dry_run: bool = False,
) -> GcPlan:
    """List, plan, remove (unless ``dry_run``): two round trips at most."""
    if base_expr in ("/", "'/'", '"$HOME"'):
        raise ConfigError(
            f"refusing to collect run dirs directly under {base_expr}: point at the runs directory"
        )
    result = transport.run(list_command(base_expr, with_squeue=with_squeue), timeout=LIST_TIMEOUT_S)
    if not result.ok:
        raise RemoteCommandError(
            "runs gc: list run dirs", result.exit_code, result.stdout, result.stderr
        )
    listing = parse_listing(result.stdout, with_squeue=with_squeue)
    if listing is None:
        return GcPlan()
    plan = plan_gc(listing, older_than_s=older_than_s)
    if plan.remove and not dry_run:
        transport.check(
            remove_command(plan.remove),
            timeout=REMOVE_TIMEOUT_S,
            hint="remove the run dirs by hand",
        )
    return plan
