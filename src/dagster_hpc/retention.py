"""What happens to a run directory after its step: the ``keep_run_dirs`` policy.

``"failed"`` (the default) removes a successful step's run directory once the job finished and
every message and log line was read, and keeps a failed one for debugging (the error names its
path). ``"always"`` keeps every run directory (``dagster-hpc runs gc`` cleans up by age);
``"never"`` removes failed ones too. Removal is one round trip (``rm -rf`` of one quoted path) and
never fails the step: a directory that cannot be removed is reported and left for ``runs gc``.
"""

from __future__ import annotations

from typing import Any, Literal

from dagster_hpc.backends.base import Backend, JobHandle
from dagster_hpc.errors import ConfigError, TransportError

KEEP_ALWAYS = "always"
KEEP_FAILED = "failed"
KEEP_NEVER = "never"
KEEP_POLICIES = (KEEP_ALWAYS, KEEP_FAILED, KEEP_NEVER)
KeepRunDirs = Literal["always", "failed", "never"]
DEFAULT_KEEP_RUN_DIRS = KEEP_FAILED


def check_keep_run_dirs(value: str) -> str:
    if value not in KEEP_POLICIES:
        raise ConfigError(
            f"keep_run_dirs={value!r} is not a retention policy: use 'failed' (keep run directories of "
            "failed steps only), 'always' or 'never'"
        )
    return value


def should_remove(keep: str, *, succeeded: bool) -> bool:
    return keep == KEEP_NEVER or (keep == KEEP_FAILED and succeeded)


def apply_retention(
    context: Any, backend: Backend, handle: JobHandle, keep: str, *, succeeded: bool
) -> bool:
    """Remove the run directory if the policy says so; True when it was removed."""
    if not should_remove(check_keep_run_dirs(keep), succeeded=succeeded):
        return False
    if succeeded and backend.run_dir_removed(handle):
        context.log.debug(
            f"dagster-hpc: removed run dir {handle.run_dir} with the final sacct query"
        )
        return True
    try:
        backend.remove_run_dir(handle.run_dir)
    except (TransportError, OSError) as exc:
        context.log.warning(
            f"dagster-hpc: could not remove run dir {handle.run_dir} of {backend.name} job {handle.job_id} "
            f"(keep_run_dirs={keep!r}): {exc}. `dagster-hpc runs gc` removes it later."
        )
        return False
    if not succeeded:
        context.log.warning(
            f"dagster-hpc: removed the failed job's run dir {handle.run_dir} (keep_run_dirs='never')"
        )
    else:
        context.log.debug(f"dagster-hpc: removed run dir {handle.run_dir} (keep_run_dirs={keep!r})")
    return True


# Metadata keys that point at the run directory (Slurm and local backends).
RUN_DIR_METADATA_SUFFIX = "/run_dir"


def kept_metadata(metadata: dict, *, removed: bool) -> dict:
    """``metadata`` without the run-directory entries when the directory was removed: a path to
    a deleted directory in the asset's metadata only sends people looking for it."""
    if not removed:
        return metadata
    return {k: v for k, v in metadata.items() if not k.endswith(RUN_DIR_METADATA_SUFFIX)}
