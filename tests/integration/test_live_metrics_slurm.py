"""Live sstat metrics and efficiency checks on the real cluster: a job that sleeps on 4 CPUs
while holding memory logs live samples, ends with the peak, the series and the plot in its
metadata, and gets a WARN CPU-efficiency check."""

import base64
import uuid

import dagster as dg
import pytest

from dagster_hpc.compute import ComputeResource
from dagster_hpc.efficiency import efficiency_checks
from dagster_hpc.kinds import hpc_asset_args
from dagster_hpc.queue import QueueConfig
from tests.integration.slurm_support import (
    CREATED_BASES,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


@pytest.mark.slow
def test_sleeping_job_on_4_cpus_logs_samples_plots_and_warns(cluster):
    resource = compute(cluster, queue=QueueConfig(time_limit="5", mem="400M", cpus_per_task=4))
    name = f"idle_{uuid.uuid4().hex[:8]}"

    @dg.asset(name=name, **hpc_asset_args(resource, kinds={"python"}))
    def idle(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "idle_holder.py").get_results()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [idle, *efficiency_checks([idle], compute=resource)],
        resources={"compute": resource},
        instance=instance,
    )
    assert result.success
    lines = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    live = [line for line in lines if " live: " in line]
    assert len(live) >= 2, lines  # sampled while it ran (first after 10 s, then every 10 s)
    assert "rss" in live[-1] and "cpu " in live[-1]
    md = result.asset_materializations_for_node(name)[0].metadata
    assert md["slurm/live_samples"].value >= 2
    assert md["slurm/live_peak_rss_mb"].value >= 70  # the 80 MB ballast, as sstat saw it
    assert md["slurm/live_peak_cpu_pct"].value < 100  # asleep on 4 CPUs
    png = base64.b64decode(md["slurm/live_plot"].value.split("base64,", 1)[1].rstrip(")"))
    assert png[:4] == b"\x89PNG"
    assert md["slurm/alloc_cpus"].value == 4
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    cpu = evals["slurm_cpu_efficiency_pct_bounds_check"]
    assert not cpu.passed and cpu.severity is dg.AssetCheckSeverity.WARN
    assert md["slurm/cpu_efficiency_pct"].value < 50
