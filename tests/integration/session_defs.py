"""Reconstructable session-mode definitions (each multiprocess step rebuilds this module).

Settings from the environment: Slurm site (SlurmResource.from_env), DHPC_SESSION_ASSETS (how many
independent assets, default 8), DHPC_PAYLOAD (default short.py), DHPC_SESSION_IDLE (idle
timeout, s), DHPC_EXECUTOR ("multiprocess" default, or "in_process"), DHPC_SESSION ("1" default;
"0": one Slurm job per asset, for the benchmark's per-job figure).

usage (driver for the kill/termination/reattach tests):
    python -m tests.integration.session_defs DAGSTER_HOME [--reexecute RUN_ID]
(--reexecute: mark the killed run failed, as Dagster's run monitoring does for a dead run worker,
re-execute it from failure and print one JSON line: run id, success, log lines, metadata)
"""

import json
import os
import sys
from pathlib import Path

import dagster as dg

from dagster_hpc.allocation.session import SessionConfig
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

PAYLOADS = Path(__file__).parent / "slurm_payloads"
JOB_NAME = "session_job"


def _make(i: int, payload: str) -> dg.AssetsDefinition:
    @dg.asset(name=f"session_{i}")
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload).get_results()

    return _asset


def session_job() -> dg.JobDefinition:
    n = int(os.environ.get("DHPC_SESSION_ASSETS", "8"))
    payload = os.environ.get("DHPC_PAYLOAD", str(PAYLOADS / "short.py"))
    assets = [_make(i, payload) for i in range(n)]
    executor = (
        dg.in_process_executor
        if os.environ.get("DHPC_EXECUTOR") == "in_process"
        else dg.multiprocess_executor.configured({"max_concurrent": n})
    )
    session = SessionConfig(
        queue={"ntasks": 4, "mem": "2000M", "time_limit": "10"},
        idle_timeout_s=int(os.environ.get("DHPC_SESSION_IDLE", "20")),
    )
    defs = dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job(
                JOB_NAME, selection=dg.AssetSelection.assets(*assets), executor_def=executor
            )
        ],
        resources={
            "compute": ComputeResource(
                mode="slurm",
                session=session if os.environ.get("DHPC_SESSION", "1") == "1" else None,
                slurm=SlurmResource.from_env(),
            )
        },
    )
    return defs.resolve_job_def(JOB_NAME)


def main(home: str) -> int:
    instance = dg.DagsterInstance.local_temp(tempdir=home)
    result = dg.execute_job(
        dg.reconstructable(session_job), instance=instance, raise_on_error=False
    )
    return 0 if result.success else 1


def reexecute(home: str, run_id: str) -> int:
    instance = dg.DagsterInstance.local_temp(tempdir=home)
    killed = instance.get_run_by_id(run_id)
    assert killed is not None, run_id
    if killed.status == dg.DagsterRunStatus.STARTED:
        instance.report_run_failed(killed)  # what run monitoring does for a dead run worker
    result = dg.execute_job(
        dg.reconstructable(session_job),
        instance=instance,
        raise_on_error=False,
        reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
    )
    lines = [
        line
        for e in instance.all_logs(result.run_id)
        if e.user_message
        for line in e.user_message.split("\n")
    ]
    metadata = {}
    if result.success:
        for node in ("session_0",):
            md = result.asset_materializations_for_node(node)[0].metadata
            metadata = {k: getattr(v, "value", v) for k, v in md.items()}
    out = {"run_id": result.run_id, "success": result.success, "lines": lines}
    print(json.dumps({**out, "metadata": metadata}, default=str))
    return 0 if result.success else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--reexecute":
        sys.exit(reexecute(sys.argv[1], sys.argv[3]))
    sys.exit(main(sys.argv[1]))
