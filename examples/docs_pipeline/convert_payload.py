"""Payload: convert the documents of the todo table on the Ray cluster that RayLauncher started
(``RAY_ADDRESS``), in a Slurm allocation or on this machine. Staged next to it by the
docs/converted asset: the todo table (ids, paths, sizes, provenance: never file contents), the
engine (``dagster_hpc_engine.zip``) and this pipeline's modules (``docs_pipeline.zip``).
"""

import os
import sys
import time

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

with open_dagster_pipes() as pipes:
    job = pipes.extras["docs"]
    settings = features.settings_from_dict(job["settings"])
    if settings.converter.code_version != job["code_version"]:
        # the job's environment converts differently from what Dagster expects: results would
        # be stored under the wrong code version and come back as stale every run
        sys.exit(
            f"docs/converted: this environment gives code version {settings.converter.code_version!r}, "
            f"the Dagster side expects {job['code_version']!r}: run the job in the same environment "
            "(scripts/docs-env.sh) or align the Docling versions"
        )
    graph = features.build_graph(settings)
    todo = pq.read_table(os.path.join(RUN_DIR, job["todo_file"]))
    started = time.monotonic()
    ray.init(runtime_env=ray_job.worker_runtime_env(ZIPS), logging_level="WARNING")
    # no progress bars: in a job's log they are a line per operator every few seconds
    ray.data.DataContext.get_current().enable_progress_bars = False
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    actors = min(ray_job.ray_actor_count(settings.ray_actors), max(1, todo.num_rows))
    pipes.log.info(
        f"converting {todo.num_rows} document(s) with {actors} Docling actor(s) on {nodes} Ray node(s)"
    )
    summary = ray_job.convert_with_ray(
        todo,
        converter=settings.converter,
        store_root=job["store_root"],
        graph=graph,
        feature=features.CONVERTED,
        actors=actors,
    )
    pipes.report_asset_materialization(
        metadata={
            "ray/nodes": nodes,
            "ray/actors": actors,
            "ray/convert_s": round(time.monotonic() - started, 2),
            "ray/written": summary.written,
            "ray/failed": summary.failed,
        }
    )
    ray.shutdown()
