"""Runs INSIDE benchmarks/.peer-venv (dagster-slurm 1.22.0, never in the project lock).

Create the venv:  uv venv benchmarks/.peer-venv && uv pip install --python benchmarks/.peer-venv/bin/python dagster-slurm==1.22.0
slurm_overhead.py calls it:
    python _peer_slurm.py single N PAYLOAD   -> JSON: client seconds per asset (in-process executor)
    python _peer_slurm.py eight PAYLOAD      -> JSON: wall of 8 assets in one multiprocess run
Settings come from PEER_* environment variables set by slurm_overhead.py (the test cluster and
a pre-deployed environment, as anchors.md describes: no pixi).
"""

import json
import os
import sys
import tempfile
import time
from importlib.metadata import version

import dagster as dg
from dagster_slurm import (
    BashLauncher,
    ComputeResource,
    SlurmQueueConfig,
    SlurmResource,
    SSHConnectionResource,
)

N_EIGHT = 8
client_times: list[float] = []


def _resource() -> ComputeResource:
    e = os.environ
    ssh = SSHConnectionResource(
        host=e["PEER_HOST"],
        port=int(e["PEER_PORT"]),
        user=e["PEER_USER"],
        key_path=e["PEER_KEY"],
        host_key_checking="strict",
        known_hosts_file=e["PEER_KNOWN_HOSTS"],
    )
    queue = SlurmQueueConfig(partition="debug", time_limit="00:05:00", cpus=1, mem="256M")
    return ComputeResource(
        mode="slurm",
        slurm=SlurmResource(ssh=ssh, queue=queue, remote_base=e["PEER_REMOTE_BASE"]),
        default_launcher=BashLauncher(),
        pre_deployed_env_path=e["PEER_ENV"],
    )


def _make(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _asset(context: dg.AssetExecutionContext, compute: ComputeResource):
        started = time.perf_counter()
        results = list(
            compute.run(context=context, payload_path=os.environ["PEER_PAYLOAD"]).get_results()
        )
        client_times.append(time.perf_counter() - started)
        yield from results

    return _asset


EIGHT = [_make(f"peer_mp_{i}") for i in range(N_EIGHT)]


def eight_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=EIGHT,
        jobs=[
            dg.define_asset_job(
                "peer_eight",
                selection=dg.AssetSelection.assets(*EIGHT),
                config={"execution": {"config": {"multiprocess": {"max_concurrent": N_EIGHT}}}},
            )
        ],
        resources={"compute": _resource()},
    )
    return defs.resolve_job_def("peer_eight")


def single(n: int) -> dict:
    asset = _make("peer_trivial")
    instance = dg.DagsterInstance.ephemeral()
    walls = []
    for _ in range(n):
        started = time.perf_counter()
        result = dg.materialize([asset], resources={"compute": _resource()}, instance=instance)
        walls.append(time.perf_counter() - started)
        assert result.success
    return {"client": client_times, "wall": walls}


def eight() -> dict:
    with tempfile.TemporaryDirectory() as home:
        instance = dg.DagsterInstance.local_temp(tempdir=home)
        started = time.perf_counter()
        with dg.execute_job(dg.reconstructable(eight_job), instance=instance) as result:
            wall = time.perf_counter() - started
            ok = result.success
    return {"wall": wall, "success": ok}


if __name__ == "__main__":
    what = sys.argv[1]
    os.environ["PEER_PAYLOAD"] = sys.argv[-1]
    data = single(int(sys.argv[2])) if what == "single" else eight()
    print(json.dumps({"version": version("dagster-slurm"), **data}))
