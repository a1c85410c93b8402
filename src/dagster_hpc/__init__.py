"""dagster-hpc: the same Dagster assets on a laptop, in CI and on Slurm; only changed samples recomputed.

This module is the public API: explicit re-exports only.
"""

from dagster_hpc.errors import DagsterHpcError

__all__ = ["DagsterHpcError"]
