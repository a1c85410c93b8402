"""The Dagster process of the kill tests in test_faults.py (SIGKILLed during staging or sbatch),
and the re-execution of its run from failure, each in a fresh process.

usage: python -m tests.integration.fault_driver run|reexecute
Asset name from DHPC_FAULT_ASSET, payload (a file of slurm_payloads/) from DHPC_FAULT_PAYLOAD,
Slurm settings from the environment (SlurmResource.from_env), the instance from DAGSTER_HOME.
``reexecute`` prints one JSON line: success, the run's log messages, the materialization metadata.
"""

import json
import os
import sys
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource

JOB_NAME = "fault_job"


def fault_job() -> dg.JobDefinition:
    name = os.environ["DHPC_FAULT_ASSET"]
    payload = Path(__file__).parent / "slurm_payloads" / os.environ["DHPC_FAULT_PAYLOAD"]

    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, payload).get_results()

    defs = dg.Definitions(
        assets=[_asset],
        jobs=[dg.define_asset_job(JOB_NAME, selection=[name], executor_def=dg.in_process_executor)],
        resources={"compute": ComputeResource(mode="slurm", slurm=SlurmResource.from_env())},
    )
    return defs.resolve_job_def(JOB_NAME)


def reexecute(instance: dg.DagsterInstance) -> dict:
    (killed,) = instance.get_runs()
    if killed.status == dg.DagsterRunStatus.STARTED:  # its process died with it
        instance.report_run_failed(killed)  # what Dagster's run monitoring does
    result = dg.execute_job(
        dg.reconstructable(fault_job),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(killed.run_id, instance),
    )
    name = os.environ["DHPC_FAULT_ASSET"]
    messages = [
        line
        for e in instance.all_logs(result.run_id)
        if e.user_message
        for line in e.user_message.split("\n")
    ]
    mats = result.asset_materializations_for_node(name) if result.success else []
    metadata = {
        k: getattr(v, "value", str(v)) for k, v in (mats[0].metadata if mats else {}).items()
    }
    return {"success": result.success, "messages": messages, "metadata": metadata}


def main(command: str) -> int:
    with dg.DagsterInstance.get() as instance:
        if command == "run":
            return (
                0 if dg.execute_job(dg.reconstructable(fault_job), instance=instance).success else 1
            )
        print(json.dumps(reexecute(instance), default=str))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
