"""The example's ComputeResource, configured from environment variables (never code edits).

DAGSTER_HPC_MODE          local (default) or slurm
DAGSTER_HPC_EXAMPLE_DATA  directory the payloads read and write (must be visible where jobs run)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dagster_hpc import ComputeResource

MODE_ENV = "DAGSTER_HPC_MODE"
DATA_ENV = "DAGSTER_HPC_EXAMPLE_DATA"


def example_data_dir() -> str:
    return os.environ.get(DATA_ENV) or str(Path(tempfile.gettempdir()) / "dagster-hpc-example-data")


def compute_from_env() -> ComputeResource:
    """ComputeResource for the example; slurm settings are read from the environment too."""
    mode = os.environ.get(MODE_ENV, "local")
    settings: dict = {}
    # --- mode="slurm": the Slurm settings from environment variables go here ---
    return ComputeResource(mode=mode, extra_env={"EXAMPLE_DATA_DIR": example_data_dir()}, **settings)
