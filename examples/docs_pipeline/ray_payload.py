"""Payload: convert documents (or embed chunks) of the todo table on Ray: in slurm mode on the
cluster RayLauncher started across the allocation (``RAY_ADDRESS``), in local mode on a private
one-node Ray this process starts itself (``local_ray`` in the job's extras). Staged next to
it by the docs/converted (docs/embeddings) asset: the todo table (ids, paths, sizes, estimated
seconds, provenance: never file contents; chunk texts for embeddings), the engine
(``dagster_hpc_engine.zip``) and this pipeline's modules (``docs_pipeline.zip``).
"""

import os
import sys
import time

STARTED = time.monotonic()
RUN_DIR = os.environ.get("DAGSTER_HPC_RUN_DIR", os.getcwd())
ZIPS = [os.path.join(RUN_DIR, name) for name in ("dagster_hpc_engine.zip", "docs_pipeline.zip")]
for archive in reversed(ZIPS):
    if os.path.isfile(archive):
        sys.path.insert(0, archive)

import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402
from dagster_pipes import open_dagster_pipes  # noqa: E402

from docs_pipeline import features, ray_job  # noqa: E402

KINDS = {"convert": features.CONVERTED, "embed": features.EMBEDDINGS}

with open_dagster_pipes() as pipes:
    job = pipes.extras["docs"]
    kind = job["kind"]
    settings = features.settings_from_dict(job["settings"])
    config = settings.converter if kind == "convert" else settings.embedding
    if config.code_version != job["code_version"]:
        # the job's environment computes differently from what Dagster expects: results would
        # be stored under the wrong code version and come back as stale every run
        sys.exit(
            f"{KINDS[kind]}: this environment gives code version {config.code_version!r}, "
            f"the Dagster side expects {job['code_version']!r}: run the job in the same environment "
            "(scripts/docs-env.sh) or align the Docling / model versions"
        )
    graph = features.build_graph(settings)
    todo = pq.read_table(os.path.join(RUN_DIR, job["todo_file"]))
    started = time.monotonic()
    if job.get("local_ray"):
        local = ray_job.start_local_ray(job["local_ray"]["cpus"], ray_job.worker_pythonpath(ZIPS))
    else:
        ray.init(runtime_env=ray_job.worker_runtime_env(ZIPS), logging_level="WARNING")
    connected = time.monotonic()
    # no progress bars: in a job's log they are a line per operator every few seconds
    ray.data.DataContext.get_current().enable_progress_bars = False
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    actors = min(ray_job.ray_actor_count(settings.ray_actors), max(1, todo.num_rows))
    what = "document(s)" if kind == "convert" else "chunk(s)"
    pipes.log.info(f"{kind}: {todo.num_rows} {what} with {actors} actor(s) on {nodes} Ray node(s)")
    run = ray_job.convert_with_ray if kind == "convert" else ray_job.embed_with_ray
    options = {"converter": config} if kind == "convert" else {"embedding": config}
    summary, batches = run(
        todo,
        store_root=job["store_root"],
        graph=graph,
        feature=KINDS[kind],
        actors=actors,
        **options,
    )
    pipes.report_asset_materialization(
        metadata={
            "ray/nodes": nodes,
            "ray/actors": actors,
            "ray/batches": batches,
            # the payload's start (Ray up already) -> connected -> every batch written
            "ray/driver_start_s": round(started - STARTED, 2),
            "ray/init_s": round(connected - started, 2),
            f"ray/{kind}_s": round(time.monotonic() - started, 2),
            "ray/written": summary.written,
            "ray/failed": summary.failed,
        }
    )
# Pipes is closed (everything reported, every result committed). Local mode: this process stops
# the Ray it started. Slurm mode: the launcher stops this job's private Ray cluster right after
# this process ends, and a driver disconnect (ray.shutdown, which interpreter exit would also
# run) only delays that stop by a second or so, so skip it.
if job.get("local_ray"):
    local.stop(RUN_DIR)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
