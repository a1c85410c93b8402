"""Payload for the real multi-node Ray test: tasks that need a whole CPU each spread over the
cluster the launcher started; reports where they ran through Dagster Pipes."""

import os
import socket
import time

import ray
from dagster_pipes import open_dagster_pipes

# Enough one-CPU tasks, each long enough, that the 2 CPUs of the head node cannot run them all
# before the worker node takes some.
TASKS = 8
TASK_S = 0.5


@ray.remote(num_cpus=1)
def where() -> str:
    time.sleep(TASK_S)
    return socket.gethostname()


with open_dagster_pipes() as pipes:
    start = time.monotonic()
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    hosts = ray.get([where.remote() for _ in range(TASKS)])
    pipes.report_asset_materialization(
        metadata={
            "ray_address": os.environ["RAY_ADDRESS"],
            "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
            "task_hosts": sorted(set(hosts)),
            "cluster_cpus": ray.cluster_resources().get("CPU", 0),
            "payload_s": round(time.monotonic() - start, 2),
            "payload_end": time.time(),
        }
    )
    ray.shutdown()
