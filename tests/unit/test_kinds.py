"""The slurm kind and partition/QOS tags come from the configuration that picks the mode."""

from __future__ import annotations

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, ConfigError, QueueConfig, SlurmResource
from dagster_hpc.kinds import hpc_asset_args, hpc_kinds, hpc_tags


def _slurm(**queue) -> ComputeResource:
    return ComputeResource(mode="slurm", slurm=SlurmResource(queue=QueueConfig(**queue)))


def test_local_mode_adds_nothing():
    compute = ComputeResource()
    assert hpc_kinds(compute, {"python"}) == {"python"}
    assert hpc_tags(compute) == {}


def test_slurm_mode_adds_the_kind_and_the_effective_partition_and_qos():
    compute = _slurm(partition="cpu", qos="normal")
    args = hpc_asset_args(compute, kinds={"python"}, queue={"partition": "gpu", "mem": "4G"})

    @dg.asset(**args)
    def trained(): ...

    spec = trained.specs_by_key[dg.AssetKey("trained")]
    assert spec.kinds == {"python", "slurm"}
    assert spec.tags["dagster-hpc/partition"] == "gpu" and spec.tags["dagster-hpc/qos"] == "normal"
    # the backend reads the same override from the metadata: tag and job cannot disagree
    assert spec.metadata["dagster-hpc/queue"] == {"partition": "gpu", "mem": "4G"}


def test_mode_from_the_environment_when_no_resource_is_given(monkeypatch):
    monkeypatch.setenv("DAGSTER_HPC_MODE", "slurm")
    monkeypatch.setenv("DAGSTER_HPC_SLURM_PARTITION", "debug")
    assert hpc_kinds(None) == {"slurm"}
    assert hpc_tags(None) == {"dagster-hpc/partition": "debug"}
    monkeypatch.setenv("DAGSTER_HPC_MODE", "local")
    assert hpc_kinds(None) == set()


def test_a_bad_queue_fails_when_definitions_load():
    with pytest.raises(
        ConfigError, match="unknown keyword .partiton. \\(did you mean .partition.\\?\\)"
    ):
        hpc_asset_args(_slurm(), queue={"partiton": "gpu"})
