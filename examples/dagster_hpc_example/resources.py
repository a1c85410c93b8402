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
    if mode == "slurm":
        settings["slurm"] = _slurm_with_payload_env()
    return ComputeResource(
        mode=mode, extra_env={"EXAMPLE_DATA_DIR": example_data_dir()}, **settings
    )


# The payloads' own environment (dagster-pipes + polars), locked beside the example: in slurm
# mode it is built from this lock, shipped once and reused until the lock changes.
PAYLOAD_ENV_LOCK = Path(__file__).resolve().parents[1] / "payload-env" / "uv.lock"


def _slurm_with_payload_env():
    """SlurmResource.from_env(), plus the example's payload env unless the site set its own
    interpreter (DAGSTER_HPC_SLURM_PYTHON) or environment (DAGSTER_HPC_ENV_LOCK / _PATH)."""
    from dagster_hpc.backends.slurm_resource import SlurmResource
    from dagster_hpc.envs.config import EnvConfig

    slurm = SlurmResource.from_env()
    if slurm.env is None and slurm.python is None:
        # a new resource (not model_copy): Dagster re-creates resources in step processes from
        # their constructor arguments
        fields = {name: getattr(slurm, name) for name in SlurmResource.model_fields}
        slurm = SlurmResource(**{**fields, "env": EnvConfig(lock=str(PAYLOAD_ENV_LOCK))})
    return slurm
