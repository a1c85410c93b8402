"""The document pipeline as Dagster assets: docs/source -> docs/converted -> docs/chunks ->
docs/embeddings, each computing only what changed (field-level provenance, see features.py).

docs/converted decides where conversion runs from the estimated cost of the increment (cost.py):
- nothing new, stale or failed: "up to date: 0 to process", no job, no Ray;
- at most ``threshold_s`` seconds of estimated conversion (where Ray's fixed price would not be
  won back; or, when set, at most ``in_process_max_docs`` documents): in this step's own
  process (no Ray, no job);
- more: a payload through ``ComputeResource.run`` on Ray (in local mode a private one-node Ray
  that the payload starts itself; in slurm mode a multi-node Ray cluster that ``RayLauncher``
  starts inside the allocation).
The decision and its figures are in the materialization's metadata (``route/*``).

Every asset runs the same frame (``_Step``): resolve the increment and count it, hand over the
samples to process, then delete orphans, log the counts and report them with the data version.
Why not the library's ``incremental_asset``: it fixes at definition time whether a feature
computes in-process (``compute_fn``) or as a payload, and docs/converted chooses per run from the
increment; docs/source also rewrites touched files' mtimes under unchanged provenance (a second
write of up-to-date samples), which a root ``incremental_asset`` does not do; and the example
reports per-field stale counts and where each step ran, which its metadata does not carry.
A document Docling cannot convert is recorded as failed (named in the log, retried next run);
the WARN check ``no_failed_documents`` counts the documents whose last attempt failed.
"""

# no `from __future__ import annotations`: Dagster reads the context annotations at runtime

import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from dagster_hpc import ComputeResource
from dagster_hpc.incremental import PROVENANCE, PROVENANCE_BY_FIELD, DeltaStore, FeatureGraph
from dagster_hpc.incremental.ship import engine_archive
from dagster_hpc.launchers import RayLauncher
from docs_pipeline import features as F
from docs_pipeline.chunking import chunk_markdown, text_digest
from docs_pipeline.cost import ROUTE_IN_PROCESS, choose_route, estimate_seconds, measured_rates
from docs_pipeline.ray_job import RayOptions
from docs_pipeline.ship import pipeline_archive
from docs_pipeline.sources import scan
from docs_pipeline.steps import PREVIEW, StepReport, Timer, data_version

HERE = Path(__file__).resolve().parent
RAY_PAYLOAD = HERE / "ray_payload.py"
TODO_FILE = "docs_todo.parquet"
FAILED_CHECK = "no_failed_documents"
GROUP = "documents"
RAY_START_ARGS = ("--disable-usage-stats",)
# A one-node RayLauncher cluster (a 1-node allocation) starts without the processes nothing
# here uses: the dashboard, the autoscaler's monitor (nothing scales this cluster) and the log
# monitor (it streams the workers' stdout to the driver; Ray's own log files stay with the run).
# Each is a Python process importing Ray (a core-second or so of every start on a small
# machine), and the monitors poll all along, beside converters that hold every core.
# Not on multi-node clusters: RayLauncher passes its arguments to every node, and `ray start`
# refuses the dashboard option on a worker (the workers' log lines are worth keeping there).
ONE_NODE_START_ARGS = ("--include-dashboard=false", "--no-monitor", "--include-log-monitor=false")
# Idle Ray workers kept alive (RAY_num_workers_soft_limit): more than the converter actors, Ray
# Data's own actors and the sink's writers together.
IDLE_WORKERS_KEPT = 16


class _Step:
    """One asset's run on the engine: resolve the increment (counted in ``report``), the samples
    to process (``todo``: new + stale + failed last time); ``finish`` deletes the orphans, logs
    the counts and returns them as the materialization (with the feature's data version)."""

    def __init__(
        self,
        settings: F.Settings,
        graph: FeatureGraph,
        key: str,
        samples: Callable[[DeltaStore], pl.DataFrame] | None = None,
    ) -> None:
        self.timer = Timer()
        self.spec = graph.feature(key)
        self.store = DeltaStore(settings.store_root, graph)
        given = samples(self.store) if samples is not None else None
        self.increment = self.store.resolve_update(self.spec, samples=given).collect()
        self.report = StepReport.of(self.spec.key, self.increment)
        self.todo = self.increment.to_process()

    def finish(self, context: Any, extra: dict[str, Any] | None = None) -> dg.MaterializeResult:
        orphaned = self.increment.orphaned
        if orphaned.height:
            self.report.deleted = self.store.delete(self.spec, orphaned)
        report = self.report
        report.seconds = self.timer.elapsed()
        context.log.info(report.summary())
        md: dict[str, Any] = dict(extra or {})
        md.update({k: v for k, v in report.as_dict().items() if k != "feature"})
        md["stale_fields"] = dg.MetadataValue.json(report.stale_fields)
        md["stale_reasons"] = dg.MetadataValue.json(report.stale_reasons)
        md["failed_ids"] = dg.MetadataValue.json(report.failed_ids[:PREVIEW])
        md["store_table"] = dg.MetadataValue.path(str(self.store.table_path(self.spec)))
        return dg.MaterializeResult(
            metadata=md,
            data_version=dg.DataVersion(data_version(self.store.read(self.spec, lazy=True))),
        )


def _code_version(spec: Any) -> str:
    return "|".join(f"{f.key}@{f.code_version}" for f in spec.fields)


def source_asset(settings: F.Settings, graph: FeatureGraph) -> dg.AssetsDefinition:
    spec = graph.feature(F.SOURCE)

    @dg.asset(
        key=spec.key.split("/"),
        group_name=GROUP,
        code_version=_code_version(spec),
        kinds={"deltalake"},
    )
    def docs_source(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """One sample per document in the folder: content hash (what conversion reads), size, path."""
        seen: dict[str, pl.DataFrame] = {}

        def samples(store: DeltaStore) -> pl.DataFrame:
            seen["stored"] = store.read(spec)
            previous = seen["stored"] if seen["stored"].height else None
            seen["scanned"] = scan(settings.corpus_dir, previous)
            return seen["scanned"]

        step = _Step(settings, graph, spec.key, samples)
        todo = step.todo
        if todo.height:
            step.store.write(spec, todo)
        step.report.computed = todo.height
        # touched files (same content, new mtime): refresh the record so they are not re-hashed
        # next time; same provenance, so nothing downstream moves
        refreshed = _refreshed(seen["scanned"], seen["stored"], todo)
        if refreshed.height:
            step.store.write(spec, refreshed)
        step.report.extra["mtime_refreshed"] = refreshed.height
        step.report.extra["documents"] = seen["scanned"].height
        step.report.path = "in-process" if todo.height else "none"
        return step.finish(context)

    return docs_source


def _refreshed(samples: pl.DataFrame, stored: pl.DataFrame, todo: pl.DataFrame) -> pl.DataFrame:
    """Up-to-date documents whose mtime moved (touched): their new mtime with the stored
    provenance (identical to the expected one, or they would be stale)."""
    if not stored.height or "mtime_ns" not in stored.columns:
        return samples.clear()
    kept = stored.select(
        "doc_id", PROVENANCE_BY_FIELD, PROVENANCE, pl.col("mtime_ns").alias("__old")
    )
    moved = samples.drop(PROVENANCE_BY_FIELD).join(kept, on="doc_id")
    moved = moved.filter(pl.col("mtime_ns") != pl.col("__old")).drop("__old")
    return moved.join(todo.select("doc_id"), on="doc_id", how="anti")


def converted_asset(
    settings: F.Settings, graph: FeatureGraph, ray: RayOptions
) -> dg.AssetsDefinition:
    spec = graph.feature(F.CONVERTED)
    key = dg.AssetKey(spec.key.split("/"))

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(F.SOURCE.split("/"))],
        group_name=GROUP,
        code_version=_code_version(spec),
        kinds={"docling", "ray"},
        check_specs=[
            dg.AssetCheckSpec(
                FAILED_CHECK, asset=key, description="documents whose last conversion failed"
            )
        ],
    )
    def docs_converted(context: dg.AssetExecutionContext, compute: ComputeResource):
        """Docling: markdown, pages, tables, status and error per document; only new, changed and
        previously failed documents are converted."""
        step = _Step(settings, graph, spec.key)
        todo, report, store = step.todo, step.report, step.store
        extra: dict[str, Any] = {}
        if todo.height == 0:
            context.log.info(f"{spec.key}: up to date: 0 to process (no job, no Ray)")
        else:
            rates = _measured_rates(store)
            inputs = _todo_table(store, spec, todo, settings.corpus_dir, rates)
            route = choose_route(
                todo.height,
                sum(inputs.column("estimated_s").to_pylist()),
                workers=_ray_workers(compute, settings, ray),
                ray_fixed_s=settings.ray_fixed_s,
                in_process_max_docs=settings.in_process_max_docs,
                rates=rates,
            )
            extra.update(route.metadata())
            context.log.info(
                f"{spec.key}: {todo.height} to process: {route.where} ({route.reason()})"
            )
            report.path = route.where
            if route.where == ROUTE_IN_PROCESS:
                _convert_here(store, spec, inputs, settings)
            else:
                extra.update(_run_on_ray(context, compute, inputs, settings, ray, "convert"))
            report.computed = todo.height
            extra["convert_cpu_s"] = _converted_seconds(store, spec, todo)
            if route.where != ROUTE_IN_PROCESS:
                # what the Ray path cost beyond Docling's own work spread over the actors: the
                # figure behind RAY_FIXED_S (cost.py)
                actors = _payload_value(extra.get("ray/actors")) or route.workers
                extra["ray/fixed_s"] = round(
                    extra["ray/job_s"] - extra["convert_cpu_s"] / max(1, int(actors)), 2
                )
        _report_failures(context, store, spec, todo, report)
        yield step.finish(context, extra)
        yield _failed_check(store, spec)

    return docs_converted


def _todo_table(
    store: DeltaStore, spec: Any, todo: pl.DataFrame, corpus_dir: Path, rates: dict[str, float]
) -> Any:
    """ids, absolute paths, sizes, estimated seconds and provenance of the documents to convert
    (no contents: the converters open the files)."""
    upstream = store.load_upstream(spec, todo).select("doc_id", "path", "size")
    root = str(Path(corpus_dir).absolute())
    frame = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(
        upstream, on="doc_id", how="left"
    )
    estimated = estimate_seconds(frame["path"].to_list(), frame["size"].to_list(), rates)
    return frame.with_columns(
        pl.concat_str(pl.lit(root + "/"), pl.col("path")).alias("path"),
        pl.Series("estimated_s", estimated, dtype=pl.Float64),
    ).to_arrow()


def _measured_rates(store: DeltaStore) -> dict[str, float]:
    """Seconds per MB by format from the documents converted so far (their ``convert_s``)."""
    converted = store.read(F.CONVERTED, lazy=True)
    if "convert_s" not in converted.collect_schema().names():
        return {}
    spent = converted.select("doc_id", "convert_s").collect()
    if not spent.height:
        return {}
    sources = store.read(F.SOURCE, lazy=True).select("doc_id", "path", "size").collect()
    joined = spent.join(sources, on="doc_id")
    return measured_rates(
        joined["path"].to_list(), joined["size"].to_list(), joined["convert_s"].to_list()
    )


def _converted_seconds(store: DeltaStore, spec: Any, todo: pl.DataFrame) -> float:
    """Docling's seconds over this run's converted documents (summed over the workers)."""
    stored = store.read(spec, lazy=True)
    if "convert_s" not in stored.collect_schema().names():
        return 0.0
    mine = stored.select("doc_id", PROVENANCE, "convert_s").collect()
    mine = mine.join(todo.select("doc_id", PROVENANCE), on=["doc_id", PROVENANCE], how="semi")
    return round(float(mine["convert_s"].sum() or 0.0), 2)


def _payload_value(value: Any) -> Any:
    """A payload's reported metadata value (Dagster wraps it in a MetadataValue)."""
    return getattr(value, "value", value)


def _ray_workers(compute: ComputeResource, settings: F.Settings, ray: RayOptions) -> int:
    """The converter actors a Ray job would get: one per CPU (this machine's in local mode, the
    allocation's in slurm mode) unless ``ray_actors`` says otherwise."""
    if settings.ray_actors:
        return settings.ray_actors
    if compute.mode == "slurm":
        return ray.nodes * ray.cpus_per_node
    return os.cpu_count() or 1


def _convert_here(store: DeltaStore, spec: Any, inputs: Any, settings: F.Settings) -> None:
    from docs_pipeline.convert import convert_table

    rows = pl.from_arrow(convert_table(inputs, settings.converter))
    store.write_results(spec, rows, error_column="error")


def _run_on_ray(
    context: Any,
    compute: ComputeResource,
    inputs: Any,
    settings: F.Settings,
    ray: RayOptions,
    kind: str = "convert",
) -> dict[str, Any]:
    """The ``kind`` ("convert" or "embed") payload over ``inputs`` as a Ray job (slurm mode:
    through RayLauncher; local mode: the payload starts its own one-node Ray); returns its
    reported metadata plus the job's wall (``ray/job_s``)."""
    import pyarrow.parquet as pq

    slurm = compute.mode == "slurm"
    env = {
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # one token for this job's Ray cluster (head, workers, driver, actors): Ray 2.60 turns
        # token auth on by itself wherever ~/.ray/auth_token exists (any earlier local
        # ray.init() writes one), and processes that disagree on it cannot join. extra_env goes
        # to the run dir's 0600 env file, never into the job script.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # Ray 2.60 re-creates a `uv run` ancestor's environment for its workers (a Dagster
        # started under `uv run` would hand them the project's .venv instead of this job's)
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        # Ray prestarts default workers (three on 2 CPUs) when the first driver
        # connects; actors (the converters, Ray Data's own) never run in them, and the job's
        # runtime_env keeps its tasks out of them too: they would only import Ray on the cores
        # the actors need while they load Docling
        "RAY_prestart_worker_first_driver": "0",
        # keep idle workers (Ray kills them after 1 s above one per CPU, and the actors are more
        # than that): the sink's write tasks then reuse one worker process instead of starting
        # a fresh one (importing Ray, polars and deltalake) for every commit
        "RAY_num_workers_soft_limit": str(IDLE_WORKERS_KEPT),
    }
    options: dict[str, Any] = {"extra_env": env}
    local_ray = None
    if slurm:
        if ray.allow_loopback:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
        options["launcher"] = RayLauncher(
            ray=ray.executable or _ray_beside_python(compute),
            node_ip_command=ray.node_ip_command,
            ray_start_args=RAY_START_ARGS + (ONE_NODE_START_ARGS if ray.nodes == 1 else ()),
        )
        options["queue"] = {
            "nodes": ray.nodes,
            "ntasks": ray.nodes,
            "cpus_per_task": ray.cpus_per_node,
            "mem": ray.mem,
            "time_limit": ray.time_limit,
        }
    else:
        # local mode: the payload starts a private one-node Ray in its own process (ray.init),
        # with this machine's CPUs: no `ray start` process, no join wait, and its Ray processes
        # end with it (docs/document-pipeline.md, "Where conversion runs")
        local_ray = {"cpus": _ray_workers(compute, settings, ray)}
    with tempfile.TemporaryDirectory(prefix="dagster-hpc-docs-") as tmp:
        pq.write_table(inputs, Path(tmp) / TODO_FILE)
        staged = [Path(tmp) / TODO_FILE, engine_archive(tmp), pipeline_archive(tmp)]
        config = settings.converter if kind == "convert" else settings.embedding
        extras = {
            "docs": {
                "kind": kind,
                "settings": F.settings_to_dict(settings),
                "store_root": str(Path(settings.store_root).absolute()),
                "todo_file": TODO_FILE,
                "code_version": config.code_version,
                "local_ray": local_ray,
            }
        }
        launched = Timer()
        completed = compute.run(context, RAY_PAYLOAD, extras=extras, extra_files=staged, **options)
        reported: dict[str, Any] = {}
        for result in completed.get_results():
            if isinstance(result, dg.MaterializeResult):
                reported.update(result.metadata or {})
        reported["ray/job_s"] = round(launched.elapsed(), 2)
        return reported


def _ray_beside_python(compute: ComputeResource) -> str:
    """The ``ray`` executable of the job's environment (beside its interpreter)."""
    python = sys.executable
    if compute.mode == "slurm" and compute.slurm is not None and compute.slurm.python:
        python = compute.slurm.python
    elif compute.python:
        python = compute.python
    return str(Path(python).with_name("ray"))


def _report_failures(
    context: Any, store: DeltaStore, spec: Any, todo: pl.DataFrame, report: StepReport
) -> None:
    if not todo.height:
        return
    failed = store.read_failed(spec)
    if not failed.height:
        return
    ours = failed.join(todo.select("doc_id", PROVENANCE), on=["doc_id", PROVENANCE], how="semi")
    paths = store.read(F.SOURCE).select("doc_id", "path")
    ours = ours.join(paths, on="doc_id", how="left")
    report.failed = ours.height
    report.failed_ids = ours["doc_id"].to_list()
    for row in ours.iter_rows(named=True):
        context.log.warning(
            f"{spec.key}: {row['doc_id']} ({row.get('path')}) could not be converted "
            f"(attempt {row.get('failures')}; retried next run): {row.get('last_error')}"
        )


def _failed_check(store: DeltaStore, spec: Any) -> dg.AssetCheckResult:
    failed = store.read_failed(spec)
    expected = store.read(F.SOURCE).select("doc_id", "path")
    current = failed.join(expected, on="doc_id", how="inner")  # documents still in the folder
    return dg.AssetCheckResult(
        check_name=FAILED_CHECK,
        passed=current.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "failed_documents": current.height,
            "paths": dg.MetadataValue.json(current["path"].head(PREVIEW).to_list()),
        },
    )


def chunks_asset(settings: F.Settings, graph: FeatureGraph) -> dg.AssetsDefinition:
    spec = graph.feature(F.CHUNKS)

    @dg.asset(
        key=spec.key.split("/"),
        deps=[dg.AssetKey(F.CONVERTED.split("/"))],
        group_name=GROUP,
        code_version=_code_version(spec),
        kinds={"python"},
    )
    def docs_chunks(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Markdown -> chunks (one document, many chunks); a changed document re-chunks all its
        chunks once; each chunk's data version is a hash of its text."""
        step = _Step(settings, graph, spec.key)
        store, report, parents = step.store, step.report, step.todo
        if parents.height:
            markdown = store.load_upstream(spec, parents).select("doc_id", "markdown")
            rows = []
            for doc_id, text in markdown.iter_rows():
                for i, chunk in enumerate(chunk_markdown(text, settings.chunking)):
                    rows.append(
                        {
                            "doc_id": doc_id,
                            "chunk_index": i,
                            "text": chunk,
                            "digest": text_digest(chunk),
                        }
                    )
            children = pl.DataFrame(
                rows,
                schema={
                    "doc_id": pl.String,
                    "chunk_index": pl.Int64,
                    "text": pl.String,
                    "digest": pl.String,
                },
            )
            out = parents.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(
                children, on="doc_id"
            )
            out = out.with_columns(
                pl.struct(pl.col("digest").alias("text")).alias("data_version_by_field")
            ).drop("digest")
            store.write(spec, out, parents=parents)
            report.computed = parents.height
            report.extra["chunks_written"] = out.height
            report.path = "in-process"
        return step.finish(context)

    return docs_chunks


def embeddings_asset(
    settings: F.Settings, graph: FeatureGraph, ray: RayOptions
) -> dg.AssetsDefinition:
    spec = graph.feature(F.EMBEDDINGS)

    @dg.asset(
        key=spec.key.split("/"),
        deps=[dg.AssetKey(F.CHUNKS.split("/"))],
        group_name=GROUP,
        code_version=_code_version(spec),
        kinds={"pytorch", "ray"},
    )
    def docs_embeddings(
        context: dg.AssetExecutionContext, compute: ComputeResource
    ) -> dg.MaterializeResult:
        """One vector per chunk, only for chunks whose text changed: in this process, or on Ray
        workers when the chunks' estimated cost pays for a Ray job (the same rule as
        docs/converted, from the model's seconds per chunk; torch already uses every core
        here, so only a Ray cluster with more CPUs than this machine pays)."""
        step = _Step(settings, graph, spec.key)
        store, report, todo = step.store, step.report, step.todo
        extra: dict[str, Any] = {}
        if todo.height:
            ids = list(spec.id_columns)
            texts = store.load_upstream(spec, todo).select(*ids, "text")
            frame = todo.select(*ids, PROVENANCE_BY_FIELD, PROVENANCE).join(
                texts, on=ids, how="left"
            )
            per_chunk = settings.embedding.seconds_per_chunk
            route = choose_route(
                todo.height,
                todo.height * per_chunk,
                workers=_ray_workers(compute, settings, ray),
                ray_fixed_s=settings.ray_fixed_s,
                in_process_max_docs=settings.embed_in_process_max,
                in_process_cpus=settings.embedding.in_process_cpus,
            )
            extra.update(route.metadata())
            context.log.info(
                f"{spec.key}: {todo.height} chunk(s) to embed: {route.where} ({route.reason()})"
            )
            report.path = route.where
            if route.where == ROUTE_IN_PROCESS:
                embedder = settings.embedding.build()
                vectors = embedder.embed(frame["text"].to_list())
                out = frame.drop("text").with_columns(
                    pl.Series("embedding", vectors, dtype=pl.List(pl.Float32))
                )
                store.write(spec, out)
            else:
                inputs = frame.with_columns(pl.lit(per_chunk).alias("estimated_s")).to_arrow()
                extra.update(_run_on_ray(context, compute, inputs, settings, ray, "embed"))
            report.computed = todo.height
            report.extra["dimension"] = _stored_dimension(store, spec)
        return step.finish(context, extra)

    return docs_embeddings


def _stored_dimension(store: DeltaStore, spec: Any) -> int | None:
    """The vectors' dimension, from one stored vector (wherever they were computed)."""
    first = store.read(spec, lazy=True).select(pl.col("embedding").list.len()).head(1).collect()
    return int(first.item()) if first.height else None


def build_assets(settings: F.Settings, ray: RayOptions | None = None) -> list[dg.AssetsDefinition]:
    graph = F.build_graph(settings)
    ray = ray or RayOptions.from_env()
    return [
        source_asset(settings, graph),
        converted_asset(settings, graph, ray),
        chunks_asset(settings, graph),
        embeddings_asset(settings, graph, ray),
    ]
