"""A full filesystem under the run directory: recognised at staging and after a job, named.

At staging, tar says so on stderr ("No space left on device") and nothing is submitted. After a
job, the payload's writes fail, and the job wrapper cannot write the exit_code file (it then
exits EXIT_CANNOT_RECORD): one ``df`` of the run directory, only on this failure path, tells a
full filesystem from other reasons, so the error names the path instead of a bare FAILED.
"""

from __future__ import annotations

import shlex

from dagster_hpc.errors import FilesystemFullError, TransportError
from dagster_hpc.jobscript import EXIT_CANNOT_RECORD
from dagster_hpc.transport.base import Transport

# What the kernel's ENOSPC / EDQUOT look like in tools' messages.
FULL_MARKERS = ("No space left on device", "Disk quota exceeded")
# Below this many free KiB the filesystem counts as full (a job script plus a small payload do
# not fit; tmpfs and quotas report a few blocks free when writes already fail).
FULL_BELOW_KB = 64
DF_TIMEOUT_S = 30.0


def says_full(text: str) -> bool:
    return any(marker in text for marker in FULL_MARKERS)


def df_command(path: str) -> str:
    """Free KiB and the mount point of ``path`` (or its nearest existing parent)."""
    q = shlex.quote(path)
    return (
        f'p={q}; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done; '
        'df -Pk -- "$p" | tail -n 1'
    )


def parse_df(stdout: str) -> tuple[int, str] | None:
    """(available KiB, mount point) from ``df -Pk``'s last line."""
    fields = stdout.split()
    if len(fields) < 6 or not fields[3].isdigit():
        return None
    return int(fields[3]), fields[5]


def staging_full_error(
    run_dir: str, cluster: str, stderr: str, *, removed: bool
) -> FilesystemFullError:
    line = next((ln for ln in stderr.splitlines() if says_full(ln)), stderr.strip()[-200:])
    return FilesystemFullError(
        f"staging the run directory {run_dir} on {cluster} failed: its filesystem is full "
        f"({line.strip()}). Nothing was submitted"
        + ("; the partly staged directory was removed" if removed else "")
        + ". Free space there or point remote_base_dir at a filesystem with room, then retry.",
        path=run_dir,
    )


def job_full_error(
    transport: Transport,
    *,
    run_dir: str,
    cluster: str,
    job_id: str,
    state: str,
    exit_code: int | None,
    stderr_tail: str,
    metadata: dict,
) -> FilesystemFullError | None:
    """The error for a failed job whose run directory's filesystem is full, else None.

    Asks ``df`` only when the failure looks like it (no exit code, the wrapper's "cannot
    record", or ENOSPC in stderr): a plain failing payload costs no extra round trip.
    """
    if exit_code is not None and exit_code != EXIT_CANNOT_RECORD and not says_full(stderr_tail):
        return None
    try:
        result = transport.run(df_command(run_dir), timeout=DF_TIMEOUT_S)
        df = parse_df(result.stdout) if result.ok else None
    except TransportError:
        df = None  # the failure is reported anyway; only the diagnosis is less precise
    low = df is not None and df[0] < FULL_BELOW_KB
    if not (low or says_full(stderr_tail)):
        return None
    free = f"{df[0]} KiB free on {df[1]}" if df else "ENOSPC in the payload's stderr"
    return FilesystemFullError(
        f"Slurm job {job_id} on {cluster} ended {state} and its run directory {run_dir} is on a "
        f"full filesystem ({free}): the payload's output or its exit_code file could not be "
        "written, so the step is failed, not reported as a success. Free space there (the run "
        "directory is kept for inspection) or point remote_base_dir at a filesystem with room.",
        path=run_dir,
        job_id=job_id,
        state=state,
        metadata=metadata,
    )
