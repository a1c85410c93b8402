"""Payload for the real torchrun test: every process joins one gloo process group (CPU), sums
the ranks with all_reduce and gathers (node number, local rank) of every process; global rank 0
reports through Dagster Pipes. Tensors only: the CPU torch env has no numpy."""

import os
import socket

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.tensor([rank])
dist.all_reduce(total)
# the test cluster's hosts are node1..node4 (UTS namespaces); any other host counts as node0
host = socket.gethostname()
node = int(host.removeprefix("node")) if host.removeprefix("node").isdigit() else 0
mine = torch.tensor([node, int(os.environ["LOCAL_RANK"])])
gathered = [torch.zeros(2, dtype=mine.dtype) for _ in range(world)]
dist.all_gather(gathered, mine)
hosts = [f"node{int(t[0])}:{int(t[1])}" for t in gathered]
if rank == 0:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(
            metadata={
                "world_size": world,
                "rank_sum": int(total.item()),
                "hosts": sorted(hosts),
                "torch": torch.__version__,
            }
        )
dist.destroy_process_group()
