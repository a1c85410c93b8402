"""Jobs for the concurrent-executor tests (reconstructable: ``dg.execute_job`` rebuilds them).

Dagster caches a reconstructed job per process, so whatever may change between runs is read
when a run starts or when an asset body runs, from the environment:

- the compute resource (at run start): DAGSTER_HPC_MODE ("local", or "slurm" with
  SlurmResource.from_env()) and DH_EXEC_BASE (local run dirs);
- each asset body: DH_EXEC_SLEEP_S (the payload's sleep; DH_EXEC_SLOW_S for the assets listed
  in DH_EXEC_SLOW), DH_EXEC_FAIL (assets whose payload fails, no retry), DH_EXEC_FLAKY (assets
  whose first attempt fails: their retry policy retries them).

Only DH_EXEC_WIDTH (wide_job) is read when the job is built.
"""

import os
import sys
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import PayloadError
from dagster_hpc.executor import hpc_executor

PAYLOAD = Path(__file__).parent / "payloads" / "timed.py"
# root -> (left, right) -> join
DIAMOND = {"root": [], "left": ["root"], "right": ["root"], "join": ["left", "right"]}
RETRY = dg.RetryPolicy(max_retries=2)


def _names(var: str) -> set[str]:
    return {n for n in os.environ.get(var, "").split(",") if n}


@dg.resource
def compute_from_env(_) -> ComputeResource:
    """Built when each run starts (not when the cached job was built): the current test's env."""
    if os.environ.get("DAGSTER_HPC_MODE", "local") == "slurm":
        return ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    return ComputeResource(mode="local", base_dir=os.environ.get("DH_EXEC_BASE"))


def _make(name: str, deps: list[str], tags: dict[str, str] | None = None):
    @dg.asset(
        name=name, deps=deps, retry_policy=RETRY, op_tags=tags, required_resource_keys={"compute"}
    )
    def _asset(context: dg.AssetExecutionContext):
        compute: ComputeResource = context.resources.compute
        flaky = name in _names("DH_EXEC_FLAKY") and context.retry_number == 0
        failing = name in _names("DH_EXEC_FAIL")
        slow = name in _names("DH_EXEC_SLOW")
        extras = {
            "sleep_s": float(os.environ.get("DH_EXEC_SLOW_S" if slow else "DH_EXEC_SLEEP_S", "1")),
            "fail": flaky or failing,
        }
        try:
            yield from compute.run(context, PAYLOAD, extras=extras).get_results()
        except PayloadError as exc:
            if flaky:
                raise  # the retry policy retries it
            raise dg.Failure(str(exc), allow_retries=False) from exc  # fails the step at once

    return _asset


def _job(
    name: str,
    graph: dict[str, list[str]],
    executor_def: dg.ExecutorDefinition = hpc_executor,
    tags: dict[str, str] | None = None,
) -> dg.JobDefinition:
    assets = [_make(n, d, tags) for n, d in graph.items()]
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets))],
        resources={"compute": compute_from_env},
        executor=executor_def,
    )
    return defs.resolve_job_def(name)


def diamond_job() -> dg.JobDefinition:
    return _job("diamond", DIAMOND)


def diamond_job_in_process() -> dg.JobDefinition:
    """The same diamond under Dagster's in-process executor (the behaviour to match)."""
    return _job("diamond_in_process", DIAMOND, dg.in_process_executor)


WIDE_TAG = "dagster-hpc/test-group"


def wide_job() -> dg.JobDefinition:
    """DH_EXEC_WIDTH independent assets, all tagged WIDE_TAG=wide (concurrency, tag limits)."""
    width = int(os.environ.get("DH_EXEC_WIDTH", "4"))
    return _job("wide", {f"w{i}": [] for i in range(width)}, tags={WIDE_TAG: "wide"})


def _fanout_asset() -> dg.AssetsDefinition:
    """Two compute.run calls on threads the asset body starts itself (DH_EXEC_SLOW_S each)."""

    @dg.asset(name="fanout", required_resource_keys={"compute"})
    def fanout(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from concurrent.futures import ThreadPoolExecutor

        extras = {"sleep_s": float(os.environ.get("DH_EXEC_SLOW_S", "1"))}
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = [
                pool.submit(context.resources.compute.run, context, PAYLOAD, extras=extras)
                for _ in range(2)
            ]
            for run in runs:
                run.result()
        return dg.MaterializeResult()

    return fanout


def _busy_asset() -> dg.AssetsDefinition:
    """Light Python for a long time, no compute.run (stopped by an asynchronous interrupt)."""

    @dg.asset(name="busy")
    def busy(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        import time

        context.log.info("busy: looping in plain Python")
        deadline = time.monotonic() + float(os.environ.get("DH_EXEC_SLOW_S", "1"))
        while time.monotonic() < deadline:
            sum(range(1000))
        return dg.MaterializeResult()

    return busy


def _chatty_asset() -> dg.AssetsDefinition:
    """Logs in a tight loop: nearly all its time is inside logging and Dagster's event log, where
    an asynchronous interrupt must not land (it once left a handler's lock held: a hung run)."""

    @dg.asset(name="chatty")
    def chatty(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        import time

        context.log.info("chatty: logging in a loop")
        deadline = time.monotonic() + float(os.environ.get("DH_EXEC_SLOW_S", "1"))
        n = 0
        while time.monotonic() < deadline:
            n += 1
            context.log.debug(f"chatty: tick {n}")
        return dg.MaterializeResult()

    return chatty


def termination_job() -> dg.JobDefinition:
    """``fanout``, ``busy`` and ``chatty`` side by side: what run termination must stop besides
    a plain ``compute.run`` asset body."""
    assets = [_fanout_asset(), _busy_asset(), _chatty_asset()]
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("termination", selection=dg.AssetSelection.assets(*assets))],
        resources={"compute": compute_from_env},
        executor=hpc_executor,
    )
    return defs.resolve_job_def("termination")


def main(job: str, home: str) -> int:
    """``python -m tests.unit.executor_defs JOB DAGSTER_HOME``: run JOB in this process (the
    termination tests interrupt or kill it)."""
    from tests.unit import executor_defs  # importable by name (not __main__): reconstructable

    instance = dg.DagsterInstance.local_temp(tempdir=home)
    result = dg.execute_job(dg.reconstructable(getattr(executor_defs, job)), instance=instance)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
