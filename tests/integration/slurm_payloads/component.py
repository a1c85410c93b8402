"""One component of a heterogeneous job: says which group and node it is and what GPUs it sees."""

import os
import socket

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    group = int(os.environ["DAGSTER_HPC_HET_GROUP"])
    node = socket.gethostname()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    pipes.log.info(f"component {group} on {node}, gpus={gpus!r}")
    pipes.report_asset_materialization(
        metadata={
            "het_group": group,
            "node": node,
            "gpus": gpus,
            "role": pipes.extras.get("role", ""),
        }
    )
