"""List the environment cache on the cluster and remove old entries (``dagster-hpc env list|gc``).

"In use" means: referenced by a job of this user that Slurm still knows as pending or
running. A job's script lives in its run directory (``squeue -o %o``): any ``envs/<key>`` named
in that directory's scripts (job.sh, launch.sh) marks the entry as in use. An entry whose lock
is held (being published right now) is skipped too. Everything else beyond the N most recently
used entries is removed, each under its key's lock, by renaming it away first so a job never
sees half an environment.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from dagster_hpc import sh
from dagster_hpc.envs.key import KEY_HEX_CHARS
from dagster_hpc.envs.manifest import LAST_USED, MANIFEST
from dagster_hpc.envs.ship import envs_root_expr
from dagster_hpc.transport.base import Transport

_MARK = "@@dhpc-env"
_KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_HEX_CHARS}}}$")
# Listing walks each entry once (du) and reads the manifests: seconds for hundreds of entries.
LIST_TIMEOUT_S = 120.0
# Removing many large entries from a shared filesystem is slow.
GC_TIMEOUT_S = 1800.0
DEFAULT_KEEP = 5
# Uploads and unpack dirs left by a run that died mid-publish. A live publish of a large env
# takes minutes; a day-old one is certainly dead.
STALE_LEFTOVER_MIN = 24 * 60


@dataclass
class EnvEntry:
    key: str
    last_used: int  # epoch seconds (last hit, else publish time)
    size_kb: int
    complete: bool  # manifest present
    in_use: bool = False
    manifest: dict = field(default_factory=dict)


def list_script(remote_base: str) -> str:
    """One round trip: every entry with its last use, size, manifest, and the keys in use
    (sh/envs_gc_list.sh)."""
    return sh.command(
        "envs_gc_list.sh",
        envs_root_expr(remote_base),
        shlex.quote(_MARK),
        shlex.quote(LAST_USED),
        shlex.quote(MANIFEST),
        str(KEY_HEX_CHARS),
    )


def parse_listing(stdout: str) -> tuple[str, list[EnvEntry]]:
    """(absolute envs dir, entries newest-first) from ``list_script``'s output."""
    root, entries, in_use = "", [], set()
    current: EnvEntry | None = None
    body: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(_MARK + " "):
            word, _, rest = line[len(_MARK) + 1 :].partition(" ")
            if word == "root":
                root = rest.strip()
            elif word == "entry":
                key, last, size = rest.split()
                current, body = EnvEntry(key, int(last), int(size), complete=False), []
            elif word == "done" and current is not None:
                if body:
                    try:
                        current.manifest = json.loads("\n".join(body))
                        current.complete = True
                    except ValueError:
                        current.complete = False  # a damaged manifest: gc may remove it
                if _KEY_RE.match(current.key):
                    entries.append(current)
                current = None
            elif word == "inuse":
                in_use.add(rest.strip())
        elif current is not None:
            body.append(line)
    for e in entries:
        e.in_use = e.key in in_use
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return root, entries


def list_entries(transport: Transport, remote_base: str) -> tuple[str, list[EnvEntry]]:
    out = transport.check(
        list_script(remote_base),
        timeout=LIST_TIMEOUT_S,
        hint="check that the remote base directory is readable (dagster-hpc doctor)",
    )
    return parse_listing(out)


def choose_removals(entries: list[EnvEntry], keep: int) -> list[EnvEntry]:
    """Entries beyond the ``keep`` most recently used, never one in use (pure)."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    return [e for e in entries[keep:] if not e.in_use]


def remove_script(root: str, keys: list[str]) -> str:
    """Remove ``keys`` under their locks; prints 'removed KEY' or 'busy KEY' per key (pure)."""
    lines = ["set -u", f"root={shlex.quote(root)}"]
    for key in keys:
        if not _KEY_RE.match(key):
            raise ValueError(f"not an environment key: {key!r}")
        lines.append(
            f'( exec 9>"$root/.lock-{key}"; if flock -n 9; then '
            f'mv "$root/{key}" "$root/.trash-{key}-gc" && rm -rf "$root/.trash-{key}-gc" && echo "removed {key}"; '
            f'else echo "busy {key}"; fi )'
        )
    return "\n".join(lines)


def leftovers_script(root: str) -> str:
    """Remove uploads/unpack dirs older than STALE_LEFTOVER_MIN minutes (crashed publishers)."""
    q = shlex.quote(root)
    return (
        f"find {q}/.incoming -maxdepth 1 -type f -mmin +{STALE_LEFTOVER_MIN} -print -delete 2>/dev/null | sed 's/^/stale /'; "
        f"find {q} -maxdepth 1 -type d \\( -name '.tmp-*' -o -name '.trash-*' \\) -mmin +{STALE_LEFTOVER_MIN} "
        "-print -exec rm -rf {} + 2>/dev/null | sed 's/^/stale /'; true"
    )


def gc(
    transport: Transport, remote_base: str, *, keep: int = DEFAULT_KEEP, dry_run: bool = False
) -> dict[str, list[str]]:
    """Keep the ``keep`` newest entries and those in use; remove the rest (unless dry_run).

    Also removes leftovers of publishers that died (older than STALE_LEFTOVER_MIN minutes)."""
    root, entries = list_entries(transport, remote_base)
    doomed = choose_removals(entries, keep)
    kept = [e.key for e in entries if e not in doomed]
    if dry_run or not root:
        return {
            "kept": kept,
            "removed": [],
            "would_remove": [e.key for e in doomed],
            "busy": [],
            "stale": [],
        }
    script = remove_script(root, [e.key for e in doomed]) + "\n" + leftovers_script(root)
    out = transport.check(script, timeout=GC_TIMEOUT_S)
    removed = [ln.split()[1] for ln in out.splitlines() if ln.startswith("removed ")]
    busy = [ln.split()[1] for ln in out.splitlines() if ln.startswith("busy ")]
    stale = [ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("stale ")]
    return {"kept": kept, "removed": removed, "would_remove": [], "busy": busy, "stale": stale}


def gc_local(bundle_dir: Path, *, keep: int = DEFAULT_KEEP) -> list[Path]:
    """Remove all but the ``keep`` most recently built bundles from the local bundle cache."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    bundles = sorted(
        (
            p
            for p in bundle_dir.glob("*.tar*")
            if ".part-" not in p.name and _KEY_RE.match(p.name.split(".", 1)[0])
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = bundles[keep:]
    # partial archives of builds that died (a live build renames its part within minutes)
    cutoff = time.time() - STALE_LEFTOVER_MIN * 60
    removed += [p for p in bundle_dir.glob("*.tar.part-*") if p.stat().st_mtime < cutoff]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
