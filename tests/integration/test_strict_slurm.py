"""Defects found by independent checks on the real test cluster, each with its regression test:
requests that can never run are refused before anything is staged (nodes beyond the partition,
GPUs where there are none), a job pending for a reason that never clears fails its step, a
refused sbatch leaves no run directory behind, and the second compute.run of a step is a job of
its own (it used to "reattach" to the first call's job)."""

import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends import slurm_pending
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError, RemoteCommandError, SlurmJobError
from tests.integration.slurm_support import (
    CREATED_BASES,
    PAYLOADS,
    cleanup_remote_bases,
    compute,
    live_jobs_named,
    remote,
    staged_run_dirs,
)

TRIVIAL = PAYLOADS / "trivial.py"


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _asset(name: str, **run_kwargs) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def the_asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, TRIVIAL, **run_kwargs).get_results()

    return the_asset


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_more_nodes_than_the_partition_has_is_refused_before_staging(cluster) -> None:
    res = compute(cluster)
    with pytest.raises(ConfigError, match=r"nodes=5 but the partition 'debug' .* has only 4 nodes"):
        dg.materialize([_asset(_name("nodes"), queue={"nodes": 5})], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []


def test_gpus_on_the_default_partition_without_gpus_are_refused(cluster) -> None:
    res = compute(cluster)  # no partition: the default one (debug, no GPUs)
    with pytest.raises(ConfigError, match=r"partition 'debug' .* has no nodes with GPUs"):
        dg.materialize(
            [_asset(_name("gpus"), queue={"gpus_per_node": 1})], resources={"compute": res}
        )
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []


def test_a_refused_sbatch_leaves_no_run_directory(cluster) -> None:
    """sbatch refuses an unknown feature (the preflight cannot know the site's features): the
    staged run directory, with its 0600 env file, used to stay on the cluster."""
    res = compute(cluster)
    with pytest.raises(RemoteCommandError, match="Invalid feature specification") as info:
        dg.materialize(
            [_asset(_name("refused"), queue={"constraint": "nosuchfeature"})],
            resources={"compute": res},
            raise_on_error=True,
        )
    assert "the staged run directory was removed" in str(info.value)
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []


def test_a_job_pending_for_a_limit_that_never_clears_fails_the_step(
    cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --nodes through extra_directives is not seen by the preflight: Slurm keeps it pending
    # with reason PartitionNodeLimit forever
    monkeypatch.setattr(slurm_pending, "HOPELESS_PENDING_GRACE_S", 3.0)
    name = _name("hopeless")
    res = compute(cluster)
    with pytest.raises(SlurmJobError, match=r"pending\s+with reason PartitionNodeLimit") as info:
        dg.materialize(
            [_asset(name, queue={"extra_directives": ["--nodes=5"]})],
            resources={"compute": res},
        )
    assert info.value.job_id and info.value.job_id in str(info.value)
    assert live_jobs_named(cluster, f"dhpc-{name}") == []  # it was cancelled, not left pending


def test_two_calls_in_one_step_are_two_jobs(cluster) -> None:
    seen: dict[str, str] = {}

    @dg.asset(name=_name("two_calls"))
    def two_calls(context: dg.AssetExecutionContext, compute: ComputeResource):
        first = compute.run(context, ["echo", "preprocess"], pipes=False)
        seen["first"] = first.metadata["slurm/job_id"].value
        yield from compute.run(context, TRIVIAL, extras={"n": 2}).get_results()

    # keep_run_dirs="always": the second call used to find the first job finished with exit
    # code 0 and "reattach" to it; its own payload never ran
    instance = dg.DagsterInstance.ephemeral()
    res = compute(cluster, keep_run_dirs="always")
    result = dg.materialize([two_calls], resources={"compute": res}, instance=instance)
    assert result.success
    md = result.asset_materializations_for_node(two_calls.key.path[-1])[0].metadata
    assert md["slurm/job_id"].value != seen["first"]
    assert md["ok"].value is True  # the second payload ran and reported
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert not any("reattach" in m for m in logs), logs
    assert len(staged_run_dirs(cluster, res.slurm.remote_base_dir)) == 2


def test_sbatch_really_accepts_the_spellings_we_refuse(cluster) -> None:
    """The reserved-option defect is real: sbatch takes abbreviations and attached values."""
    out = remote(cluster, "sbatch --test-only -Jx --job=x --out=/tmp/x --wrap true 2>&1")
    assert "to start at" in out, out
    assert Path(TRIVIAL).exists()
