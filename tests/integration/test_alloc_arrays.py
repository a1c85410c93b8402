"""Job arrays on the real cluster (MaxArraySize=40 there): a single-run backfill of 100
partitions is ONE step, 3 sbatch --array calls; one failing partition is named by its key; the
re-execution reattaches and reruns only that partition."""

import shlex
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from tests.integration import alloc_defs
from tests.integration.slurm_support import (
    CREATED_BASES,
    cleanup_remote_bases,
    remote,
    slurm_env,
    unique,
)

N = 100


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _array_jobs(cluster, name: str, expect: int) -> dict[str, list[str]]:
    """array job id -> states of its tasks (sacct, ours by the unique job name)."""
    deadline = time.monotonic() + 15
    while True:
        text = remote(
            cluster,
            f"sacct -n -P --starttime now-1hour --name={shlex.quote(job_name(name))} -X --format=JobID,State",
        )
        jobs: dict[str, list[str]] = {}
        for line in text.splitlines():
            jid, _, state = line.partition("|")
            jobs.setdefault(jid.split("_")[0], []).append(state)
        if len(jobs) >= expect or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def _messages(instance, run_id: str) -> list[str]:
    """Every line logged (the tasks' lines of one read arrive as one event, one line each)."""
    return [
        line
        for e in instance.all_logs(run_id)
        if e.user_message
        for line in e.user_message.split("\n")
    ]


def test_hundred_partitions_three_arrays_one_failure_rerun_alone(
    cluster, monkeypatch, tmp_path: Path
) -> None:
    name = unique("parts").replace("-", "_")
    env = slurm_env(cluster)
    flag = f"/tmp/{name}.ok"  # created between the runs: the failing partition then succeeds
    env.update(DHPC_ASSET=name, DHPC_PARTITIONS=str(N), DHPC_FAIL_KEY="p042", DHPC_FAIL_UNLESS=flag)
    for k, v in env.items():
        if k.startswith(("DAGSTER_HPC_", "DHPC_")):
            monkeypatch.setenv(k, v)
    tags = alloc_defs.range_tags("p000", f"p{N - 1:03d}")
    job = dg.reconstructable(alloc_defs.partitions_job)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False)
        assert not first.success
        failure = next(e for e in first.all_events if e.is_step_failure)
        text = str(failure.step_failure_data.error.cause.message)
        assert "1 of 100 array items failed: p042" in text, text
        assert "FAILED, exit code 3" in text and "p042 fails on purpose" in text, text
        msgs = _messages(instance, first.run_id)
        assert "[p007] working on p007" in msgs and "[p099] stdout of p099" in msgs
        assert any("as 3 array job(s)" in m for m in msgs), msgs
        jobs = _array_jobs(cluster, name, 3)
        assert len(jobs) == 3, jobs  # 100 tasks, MaxArraySize 40: 40 + 40 + 20
        assert sorted(len(s) for s in jobs.values()) == [20, 40, 40], jobs
        assert sum(s.count("FAILED") for s in jobs.values()) == 1

        remote(cluster, f"touch {shlex.quote(flag)}")
        second = dg.execute_job(
            job,
            instance=instance,
            tags=tags,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )
        assert second.success
        msgs = _messages(instance, second.run_id)
        assert any(
            "99 items succeeded earlier (kept)" in m and "1 to run again: p042" in m for m in msgs
        ), msgs
        assert "[p042] working on p042" in msgs and "[p041] working on p041" not in msgs
        mats = second.asset_materializations_for_node(name)
        by_key = {m.partition: m.metadata for m in mats}
        assert sorted(by_key) == alloc_defs.partition_keys(N)
        assert all(by_key[k]["square"].value == int(k[1:]) ** 2 for k in by_key)
        assert by_key["p042"]["slurm/state"].value == "COMPLETED"
        assert "_" in by_key["p005"]["slurm/job_id"].value  # the task's own accounting record
        jobs = _array_jobs(cluster, name, 4)
        assert len(jobs) == 4, jobs  # one more array, of one task
        assert sorted(len(s) for s in jobs.values()) == [1, 20, 40, 40], jobs
    remote(cluster, f"rm -f {shlex.quote(flag)}")


def test_connection_dropped_between_sbatch_calls_never_submits_twice(
    cluster, dedicated_key, monkeypatch, tmp_path: Path
) -> None:
    """41 partitions = 2 chunks (MaxArraySize 40). The submitting shell loses its SSH connection
    (its sshd is killed) and dies right after chunk 0's sbatch answered, before arrays.txt lists
    it. The step's retry finds chunk 0 by its script, waits for it, submits only chunk 1."""
    from dagster_hpc.allocation import runner
    from dagster_hpc.backends.slurm_resource import SlurmResource
    from dagster_hpc.compute import ComputeResource

    n = 41
    name = unique("cut").replace("-", "_")
    env = slurm_env(cluster, key_path=dedicated_key.path)  # our own connection: we cut it
    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)
    real_submit = runner.submit_command
    cuts: list[str] = []

    def submit_then_cut(run_dir, scripts):
        cmd = real_submit(run_dir, scripts)
        if cuts:
            return cmd  # the retry submits normally
        cuts.append(run_dir)
        # the connection's sshd dies, and this shell with it, between sbatch and the record
        marker = f'&& echo "$id {scripts[0][0]} '
        assert marker in cmd, cmd
        return cmd.replace(marker, "&& { kill -TERM $PPID; kill -KILL $$; } " + marker, 1)

    monkeypatch.setattr(runner, "submit_command", submit_then_cut)
    parts = dg.StaticPartitionsDefinition(alloc_defs.partition_keys(n))

    @dg.asset(
        name=name,
        partitions_def=parts,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=dg.RetryPolicy(max_retries=1),
    )
    def cut_parts(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, alloc_defs.PAYLOAD).get_results()

    compute = ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            [cut_parts],
            resources={"compute": compute},
            instance=instance,
            tags=alloc_defs.range_tags("p000", f"p{n - 1:03d}"),
        )
        assert result.success
        msgs = _messages(instance, result.run_id)
        mats = result.asset_materializations_for_node(name)
    assert len(cuts) == 1
    assert any("were submitted from" in m and "connection dropped" in m for m in msgs), msgs
    # chunk 0's 40 items: kept (finished) or waited for (still running); only p040 submitted
    assert any(m.endswith(", 1 to run again: p040") for m in msgs), msgs
    by_key = {m.partition: m.metadata for m in mats if m.partition}
    assert sorted(by_key) == alloc_defs.partition_keys(n)
    assert all(by_key[k]["square"].value == int(k[1:]) ** 2 for k in by_key)
    jobs = _array_jobs(cluster, name, 2)
    assert sorted(len(s) for s in jobs.values()) == [1, 40], jobs  # chunk 0 once, chunk 1 once
    assert all(state == "COMPLETED" for s in jobs.values() for state in s), jobs
