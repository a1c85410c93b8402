"""Runs INSIDE benchmarks/.peer-venv (dagster-slurm 1.22.0, never in the project lock).

Create the venv:  uv venv benchmarks/.peer-venv && uv pip install --python benchmarks/.peer-venv/bin/python dagster-slurm==1.22.0
Usage (local_overhead.py calls it): python _peer_local.py N PAYLOAD  -> one JSON line on stdout.
Local mode needs PIXI_PROJECT_ROOT set to some directory (a known quirk of the peer).
"""

import json
import sys
import time
from importlib.metadata import version

import dagster as dg
from dagster_slurm import BashLauncher, ComputeResource

N, PAYLOAD = int(sys.argv[1]), sys.argv[2]
client_times: list[float] = []


@dg.asset
def trivial_peer(context: dg.AssetExecutionContext, compute: ComputeResource):
    started = time.perf_counter()
    results = list(compute.run(context=context, payload_path=PAYLOAD).get_results())
    client_times.append(time.perf_counter() - started)
    yield from results


walls: list[float] = []
resources = {"compute": ComputeResource(mode="local", default_launcher=BashLauncher())}
instance = dg.DagsterInstance.ephemeral()
for _ in range(N):
    started = time.perf_counter()
    result = dg.materialize([trivial_peer], resources=resources, instance=instance)
    walls.append(time.perf_counter() - started)
    assert result.success
print(json.dumps({"version": version("dagster-slurm"), "client": client_times, "wall": walls}))
