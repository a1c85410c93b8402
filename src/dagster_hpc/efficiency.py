"""Efficiency checks: a WARN asset check when a Slurm job wasted its allocation.

One line, on Dagster's own metadata bounds checks over the ``slurm/*_efficiency_pct`` entries
every Slurm-mode materialization carries::

    defs = dg.Definitions(assets=assets, asset_checks=efficiency_checks(assets, compute=compute))

CPU efficiency is CPU time used / (elapsed x allocated CPUs); memory efficiency is the peak RSS
of a task / the memory allocated per node (``metrics.JobMetrics``). In local mode (no Slurm
numbers) it returns no checks, driven by the same configuration that picks the mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from dagster_hpc.kinds import resolve_mode
from dagster_hpc.metrics import METADATA_PREFIX

CPU_EFFICIENCY_KEY = f"{METADATA_PREFIX}cpu_efficiency_pct"
MEM_EFFICIENCY_KEY = f"{METADATA_PREFIX}mem_efficiency_pct"
# Below half the CPUs busy on average, the job asked for at least twice what it used: worth a
# look (I/O-bound stages legitimately sit lower: raise or lower the bound per project).
DEFAULT_MIN_CPU_EFFICIENCY_PCT = 50.0
# Memory is requested with headroom on purpose (an OOM kill costs the whole job): warn only
# when less than a quarter of the request was ever used.
DEFAULT_MIN_MEM_EFFICIENCY_PCT = 25.0


def efficiency_checks(
    assets: Sequence[Any],
    *,
    compute: Any = None,
    min_cpu_pct: float | None = DEFAULT_MIN_CPU_EFFICIENCY_PCT,
    min_mem_pct: float | None = DEFAULT_MIN_MEM_EFFICIENCY_PCT,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks that warn when CPU or memory efficiency is below its bound (None: no
    check for that resource). ``compute`` (or ``$DAGSTER_HPC_MODE``) in local mode: none."""
    if resolve_mode(compute) != "slurm" or not assets:
        return []
    checks: list[dg.AssetChecksDefinition] = []
    for key, bound in ((CPU_EFFICIENCY_KEY, min_cpu_pct), (MEM_EFFICIENCY_KEY, min_mem_pct)):
        if bound is not None:
            checks.extend(
                dg.build_metadata_bounds_checks(
                    assets=list(assets), severity=severity, metadata_key=key, min_value=bound
                )
            )
    return checks
