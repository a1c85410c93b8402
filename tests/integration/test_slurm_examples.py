"""Every example asset, unchanged, with DAGSTER_HPC_MODE=slurm against the test cluster (the
settings come from environment variables only, as the README shows for a real site)."""

import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from tests.integration.slurm_support import CREATED_BASES, cleanup_remote_bases, slurm_env


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_example_asset_runs_as_a_slurm_job(cluster, monkeypatch) -> None:
    env = slurm_env(cluster)
    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)
    # payloads write their data where the jobs run (as the cluster user)
    monkeypatch.setenv(
        "DAGSTER_HPC_EXAMPLE_DATA",
        f"/home/{cluster.user}/.dagster-hpc-tests/example-{uuid.uuid4().hex[:8]}",
    )
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in [m for m in sys.modules if m.startswith("dagster_hpc_example")]:
        monkeypatch.delitem(sys.modules, name)
    from dagster_hpc_example import definitions
    from dagster_hpc_example.resources import compute_from_env

    compute = compute_from_env()
    assert compute.mode == "slurm" and compute.slurm is not None and compute.slurm.ssh is not None
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        definitions.UNPARTITIONED, resources={"compute": compute}, instance=instance
    )
    assert result.success
    materialized = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert set(materialized) == {
        "measurements",
        "sensor_summary",
        "sensor_report",
        "clean_measurements",
        "rejected_measurements",
    }
    job_ids = set()
    for key, md in materialized.items():
        if "slurm/job_id" in md:
            job_ids.add(md["slurm/job_id"].value)
            assert md["slurm/state"].value == "COMPLETED", key
    assert len(job_ids) == 4  # four payloads (one multi-asset) = four Slurm jobs
    assert materialized["sensor_summary"]["sensors"].value == 17  # real polars work on the node
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [c.event_specific_data.check_name for c in checks] == ["values_within_threshold"]
    for key in definitions.REGIONS.get_partition_keys():
        part = dg.materialize(
            [definitions.regional_measurements],
            partition_key=key,
            resources={"compute": compute},
            instance=instance,
            selection=[definitions.regional_measurements],
        )
        md = part.asset_materializations_for_node("regional_measurements")[0].metadata
        assert md["region"].value == key and md["slurm/state"].value == "COMPLETED"
