"""Conversion (and, above their own threshold, embeddings) on a Ray cluster with Ray Data: batches cut from the documents' estimated cost
(shards.py: shrinking as the work runs out), an actor pool of warm Docling converters (each
loads Docling and every format's pipeline once), results and failures written through the
incremental engine's Ray Data sink (Delta merge per block, failed documents recorded as failed).

The driver only handles the todo table (ids, paths, sizes, provenance): the actors open the
files, so the files must be on a filesystem every node sees (a cluster's shared filesystem).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from docs_pipeline.convert import ConverterConfig, DoclingConverter, finish_batch
from docs_pipeline.embed import EmbeddingConfig
from docs_pipeline.shards import guided_batches

# Concurrent Delta writers of the sink: one. Each write is one merge commit, and commits of one
# table are serial anyway (a second writer only loses commit races); each writer is a Ray worker
# process that imports Ray, polars and deltalake once, beside converters holding every CPU.
SINK_CONCURRENCY = 1
# Delta commits per job (about): the sink gathers converted blocks into writes of at least
# rows / SINK_COMMITS rows. One write at the end would put a writer's start (a worker process
# importing polars and deltalake) and the whole merge after the last conversion; one per block
# would add a commit's CPU beside the converters a dozen times.
SINK_COMMITS = 4
# CPU reservation of a write task: none, since the converters hold every CPU while they run and a
# write (a Delta merge of one shard's rows) is short and mostly I/O.
WRITER_CPUS = 0
RAY_PREFIX = "DAGSTER_HPC_DOCS_RAY_"
# Local mode's Ray: its temp dir's parent (short: Ray puts Unix sockets ~75 bytes below it) and
# where its logs go in the run directory.
LOCAL_RAY_TEMP_ROOT = "/tmp"
LOCAL_RAY_LOGS = "ray-logs"
# Ray's autoscaler monitor, which ray.init starts on every head node (the script's path inside
# the Ray package): nothing scales local mode's one-node Ray (RayLauncher's one-node start
# passes --no-monitor, which ray.init cannot), it polls beside the converters, and at
# ray.shutdown it outlasts the SIGTERM by the whole second Ray grants before its SIGKILL (1.0 s
# of a 1.4 s stop, measured). Stopped right after ray.init, by its PID.
AUTOSCALER_MONITOR_SCRIPT = "autoscaler/_private/monitor.py"
# The embedding todo's input-only columns (not stored in docs/embeddings).
EMBED_INPUT_ONLY = ("text", "estimated_s")
NO_ERROR_COLUMN = "__no_error_column__"
# Columns the todo table must carry (the Dagster side writes them).
TODO_COLUMNS = ("doc_id", "path", "size", "estimated_s", "provenance_by_field", "provenance")
# Threads of one actor's numeric libraries (torch intra-op, OpenMP, BLAS): one. The actors are
# the parallelism (one per CPU); torch, which Docling imports, would otherwise size its pool by
# the node's cores (two threads per actor on a 2-core node, beside the other actor's two).
ACTOR_THREADS = 1
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_threads(threads: int = ACTOR_THREADS) -> None:
    """Size this process's numeric thread pools to ``threads`` (before Docling or the model
    imports torch; torch's own setting too if it is imported already). A variable the job's
    environment sets is kept."""
    import sys

    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


class ConvertActor:
    """One Ray actor: Docling loaded once, then whole shards converted into the rows the store
    keeps (one stage: a separate CPU task per batch would wait for the CPUs the actors hold)."""

    def __init__(self, config_json: str):
        pin_threads()
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
) -> tuple[Any, int]:
    """Convert every row of ``todo`` and write it (or its failure) to the store.

    Returns the sink's ``WriteSummary`` and the number of batches. ``ray.init`` must have
    been called.
    """
    missing = [c for c in TODO_COLUMNS if c not in todo.column_names]
    if missing:
        raise ValueError(f"the todo table lacks {missing}: it has {todo.column_names}")
    return map_with_ray(
        todo,
        actor=ConvertActor,
        actor_args=(converter.to_json(),),
        store_root=store_root,
        graph=graph,
        feature=feature,
        actors=actors,
        error_column="error",
    )


class EmbedActor:
    """One Ray actor: the embedding model loaded once, then whole batches of chunk texts into
    the rows docs/embeddings stores (ids, provenance, the vector)."""

    def __init__(self, config_json: str):
        pin_threads()
        self._embedder = EmbeddingConfig.from_json(config_json).build()

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self._embedder.embed([t or "" for t in batch.column("text").to_pylist()])
        kept = [c for c in batch.column_names if c not in EMBED_INPUT_ONLY]
        column = pa.array(vectors, type=pa.list_(pa.float32()))
        return batch.select(kept).append_column("embedding", column)


def embed_with_ray(
    todo: pa.Table,
    *,
    embedding: EmbeddingConfig,
    store_root: str,
    graph: Any,
    feature: str,
    actors: int | None = None,
) -> tuple[Any, int]:
    """Embed every chunk of ``todo`` (ids, provenance, text, estimated_s) and write the vectors."""
    missing = [c for c in ("text", "estimated_s") if c not in todo.column_names]
    if missing:
        raise ValueError(f"the todo table lacks {missing}: it has {todo.column_names}")
    return map_with_ray(
        todo,
        actor=EmbedActor,
        actor_args=(embedding.to_json(),),
        store_root=store_root,
        graph=graph,
        feature=feature,
        actors=actors,
        error_column=None,
    )


def map_with_ray(
    todo: pa.Table,
    *,
    actor: type,
    actor_args: tuple[Any, ...],
    store_root: str,
    graph: Any,
    feature: str,
    actors: int | None,
    error_column: str | None,
) -> tuple[Any, int]:
    """``todo`` cut into batches by its ``estimated_s`` (shards.py), mapped by a pool of
    ``actor`` (one per CPU unless ``actors``), written through the incremental sink (rows with
    a non-null ``error_column`` recorded as failed). Returns (``WriteSummary``, batches)."""
    import ray.data

    from dagster_hpc.incremental.ray_sink import IncrementalDatasink

    n_actors = min(ray_actor_count(actors), max(1, todo.num_rows))
    groups = guided_batches(todo.column("estimated_s").to_pylist(), n_actors)
    blocks = [todo.take(pa.array(g, pa.int64())) for g in groups]
    # from_blocks: the blocks' metadata is read here; from_arrow would start a Ray task per block
    # for it (fresh worker processes importing Ray Data before the first conversion)
    dataset = ray.data.from_blocks(blocks)
    mapped = dataset.map_batches(
        actor,
        fn_constructor_args=actor_args,
        batch_size=None,  # one batch = one block: the cut above is kept
        batch_format="pyarrow",
        # one batch in flight per actor: the next batch goes to whichever actor is free (queued
        # ahead, the batches would be dealt out round-robin and the cut's balance lost)
        compute=ray.data.ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=1),
        num_cpus=1,
    )
    sink = IncrementalDatasink(
        store_root,
        graph,
        feature,
        # no error column (embeddings): a column name no batch has, so every row is written
        error_column=error_column or NO_ERROR_COLUMN,
        max_concurrency=SINK_CONCURRENCY,
        min_rows_per_write=max(1, math.ceil(todo.num_rows / SINK_COMMITS)),
        raise_on_failed=False,  # a failed document is recorded and reported, the rest is kept
    )
    # the writers need no CPU of their own: the actors hold every CPU until the last batch
    mapped.write_datasink(
        sink, concurrency=sink.max_concurrency, ray_remote_args={"num_cpus": WRITER_CPUS}
    )
    return sink.summary, len(blocks)


@dataclass(frozen=True)
class LocalRay:
    """A private one-node Ray started by this process (local mode): its temp dir."""

    temp_dir: str

    def stop(self, run_dir: str) -> None:
        """Stop this Ray (every process it started: without it its agents outlive this one),
        give its logs to the run directory (``ray-logs``, a few hundred KB), drop the temp dir."""
        import ray

        ray.shutdown()
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        if logs.is_dir():
            shutil.copytree(logs, Path(run_dir) / LOCAL_RAY_LOGS, dirs_exist_ok=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_local_ray(cpus: int, worker_env: dict[str, str]) -> LocalRay:
    """Start a private one-node Ray with ``cpus`` CPUs in this process and connect to it.

    Without RayLauncher: no `ray start` process (nor the Ray client server it adds), no join
    wait, no process group to signal afterwards. No dashboard; a temp dir of its own (never
    another Ray's), short enough for Ray's Unix sockets (107 bytes). ``worker_env`` goes into
    this process's environment, which Ray's processes and so every worker inherit: no
    ``runtime_env``, so the workers Ray prestarts for this driver match the actors' (empty)
    runtime environment and the actors start in them (an actor with a runtime_env of its own
    waits for a fresh worker process, importing Ray, after the driver has planned)."""
    import ray

    os.environ.update(worker_env)
    temp_dir = tempfile.mkdtemp(prefix="dhpc-ray-", dir=LOCAL_RAY_TEMP_ROOT)
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        _temp_dir=temp_dir,
    )
    local = LocalRay(temp_dir)
    stop_child(AUTOSCALER_MONITOR_SCRIPT)
    # a payload that fails stops it too (the success path calls it before os._exit)
    atexit.register(local.stop, os.environ.get("DAGSTER_HPC_RUN_DIR", os.getcwd()))
    return local


def stop_child(script: str) -> int | None:
    """SIGKILL this process's child whose command line runs ``script`` (the first found);
    its PID, or None if there is none or no /proc to look in (macOS: Ray reaps it at
    ``ray.shutdown``, a second later)."""
    me = os.getpid()
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours
        if script in cmdline:
            pid = int(entry.name)
            os.kill(pid, signal.SIGKILL)
            return pid
    return None


def worker_pythonpath(paths: list[str]) -> dict[str, str]:
    """PYTHONPATH for Ray workers (they do not inherit the driver's sys.path): the staged zips
    (engine, pipeline) ahead of whatever the job environment has; empty without any."""
    entries = [str(Path(p).resolve()) for p in paths if Path(p).exists()]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        entries.append(existing)
    return {"PYTHONPATH": os.pathsep.join(entries)} if entries else {}


def worker_runtime_env(paths: list[str]) -> dict[str, Any]:
    """A multi-node cluster's workers (not children of this driver): the same PYTHONPATH as
    a runtime_env."""
    env = worker_pythonpath(paths)
    return {"env_vars": env} if env else {}


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
