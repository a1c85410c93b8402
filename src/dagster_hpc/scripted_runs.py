"""Runs started from a script that the Dagster UI can re-execute.

``dg.execute_job(dg.reconstructable(fn))`` records where the job's Python code is, but not which
code location of a workspace it belongs to; the UI's "Re-execute" button needs the latter and
fails on such runs ("Expected non-None value ... remote_job_origin"). ``execute_job_in_code_location``
runs a job of a module's ``Definitions`` exactly like ``execute_job`` (multiprocess executor,
persistent instance) and records the code location that ``dagster dev -m MODULE`` serves.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from dagster_hpc import _dagster_adapter


def execute_job_in_code_location(
    module_name: str,
    job_name: str,
    *,
    instance: dg.DagsterInstance,
    working_directory: str,
    attribute: str = "defs",
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecutionResult:
    """Execute ``job_name`` of ``module_name.attribute`` (a ``Definitions``); never raises on a
    failed run (check ``result.success``). Enter it (``with``) only to load outputs: that
    starts the job's resources again."""
    return _dagster_adapter.execute_job_in_code_location(
        module_name,
        job_name,
        instance=instance,
        working_directory=working_directory,
        attribute=attribute,
        run_config=run_config,
        tags=tags,
    )
