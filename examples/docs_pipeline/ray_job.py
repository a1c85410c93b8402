"""Conversion on a Ray cluster with Ray Data: shards balanced by file size, an actor pool of
Docling converters (each loads Docling once), results and failures written through the
incremental engine's Ray Data sink (Delta merge per block, failed documents recorded as failed).

The driver only handles the todo table (ids, paths, sizes, provenance): the actors open the
files, so the files must be on a filesystem every node sees (a cluster's shared filesystem).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from docs_pipeline.convert import ConverterConfig, DoclingConverter, finish_batch
from docs_pipeline.shards import balance_by_size, shard_count

# Concurrent Delta writers of the sink: each block is one merge commit; more writers than this
# only lose commit races against each other.
SINK_CONCURRENCY = 2
# CPU reservation of a write task: none, since the converters hold every CPU while they run and a
# write (a Delta merge of one shard's rows) is short and mostly I/O.
WRITER_CPUS = 0
RAY_PREFIX = "DAGSTER_HPC_DOCS_RAY_"
# Columns the todo table must carry (the Dagster side writes them).
TODO_COLUMNS = ("doc_id", "path", "size", "provenance_by_field", "provenance")


class ConvertActor:
    """One Ray actor: Docling loaded once, then whole shards converted into the rows the store
    keeps (one stage: a separate CPU task per batch would wait for the CPUs the actors hold)."""

    def __init__(self, config_json: str):
        self._converter = DoclingConverter(config_json)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return finish_batch(self._converter(batch))


def ray_actor_count(requested: int | None) -> int:
    """One converter per CPU of the cluster (the driver's own work is negligible)."""
    import ray

    if requested:
        return requested
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def convert_with_ray(
    todo: pa.Table,
    *,
    converter: ConverterConfig,
    store_root: str,
    graph: Any,
    feature: str,
    actors: int | None = None,
) -> Any:
    """Convert every row of ``todo`` and write it (or its failure) to the store.

    Returns the sink's ``WriteSummary``. ``ray.init`` must have been called.
    """
    import ray.data

    from dagster_hpc.incremental.ray_sink import IncrementalDatasink

    missing = [c for c in TODO_COLUMNS if c not in todo.column_names]
    if missing:
        raise ValueError(f"the todo table lacks {missing}: it has {todo.column_names}")
    n_actors = min(ray_actor_count(actors), max(1, todo.num_rows))
    groups = balance_by_size(todo.column("size").to_pylist(), shard_count(todo.num_rows, n_actors))
    blocks = [todo.take(pa.array(g, pa.int64())) for g in groups]
    dataset = ray.data.from_arrow(blocks)
    converted = dataset.map_batches(
        ConvertActor,
        fn_constructor_args=(converter.to_json(),),
        batch_size=None,  # one shard = one block = one batch: the balance above is kept
        batch_format="pyarrow",
        concurrency=n_actors,
        num_cpus=1,
    )
    sink = IncrementalDatasink(
        store_root,
        graph,
        feature,
        error_column="error",
        max_concurrency=SINK_CONCURRENCY,
        raise_on_failed=False,  # a failed document is recorded and reported, the rest is kept
    )
    # the writers need no CPU of their own: the actors hold every CPU until the last shard
    converted.write_datasink(
        sink, concurrency=sink.max_concurrency, ray_remote_args={"num_cpus": WRITER_CPUS}
    )
    return sink.summary


def worker_runtime_env(paths: list[str]) -> dict[str, Any]:
    """Ray workers do not inherit the driver's sys.path: give them the staged zips (engine,
    pipeline) on PYTHONPATH, ahead of whatever the job environment has."""
    entries = [str(Path(p).resolve()) for p in paths if Path(p).exists()]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        entries.append(existing)
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(entries)}} if entries else {}


@dataclass(frozen=True)
class RayOptions:
    """How the conversion's Ray cluster starts (``DAGSTER_HPC_DOCS_RAY_*``)."""

    nodes: int = 2  # slurm mode: the allocation's nodes (local mode: one)
    cpus_per_node: int = 1
    mem: str = "3G"
    time_limit: str = "00:30:00"
    node_ip_command: str | None = None
    executable: str | None = None  # default: `ray` beside the job's interpreter
    allow_loopback: bool = (
        False  # nodes on 127.x (test clusters): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    )

    @classmethod
    def from_env(cls) -> RayOptions:
        env = os.environ
        return cls(
            nodes=int(env.get(RAY_PREFIX + "NODES", cls.nodes)),
            cpus_per_node=int(env.get(RAY_PREFIX + "CPUS_PER_NODE", cls.cpus_per_node)),
            mem=env.get(RAY_PREFIX + "MEM", cls.mem),
            time_limit=env.get(RAY_PREFIX + "TIME_LIMIT", cls.time_limit),
            node_ip_command=env.get(RAY_PREFIX + "NODE_IP_COMMAND") or None,
            executable=env.get(RAY_PREFIX + "EXECUTABLE") or None,
            allow_loopback=env.get(RAY_PREFIX + "ALLOW_LOOPBACK", "") == "1",
        )
