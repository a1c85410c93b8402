"""The document pipeline as Dagster assets: docs/source -> docs/converted -> docs/chunks ->
docs/embeddings, each computing only what changed (field-level provenance, see features.py).

docs/converted decides where conversion runs from the size of the increment:
- nothing new, stale or failed: "up to date: 0 to process", no job, no Ray;
- at most ``in_process_max_docs`` documents: in this step's own process (no Ray, no job);
- more: a payload through ``ComputeResource.run`` with ``RayLauncher`` (a one-node Ray cluster
  on this machine in local mode, a multi-node one inside a Slurm allocation in slurm mode).
A document Docling cannot convert is recorded as failed (named in the log, retried next run);
the WARN check ``no_failed_documents`` counts the documents whose last attempt failed.
"""

# no `from __future__ import annotations`: Dagster reads the context annotations at runtime

import secrets
import sys
import tempfile
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
from docs_pipeline.ray_job import RayOptions
from docs_pipeline.ship import pipeline_archive
from docs_pipeline.sources import scan
from docs_pipeline.steps import PREVIEW, StepReport, Timer, data_version

HERE = Path(__file__).resolve().parent
CONVERT_PAYLOAD = HERE / "convert_payload.py"
TODO_FILE = "docs_todo.parquet"
FAILED_CHECK = "no_failed_documents"
GROUP = "documents"


def _metadata(report: StepReport, store: DeltaStore, spec: Any) -> dict[str, Any]:
    md: dict[str, Any] = {k: v for k, v in report.as_dict().items() if k != "feature"}
    md["stale_fields"] = dg.MetadataValue.json(report.stale_fields)
    md["stale_reasons"] = dg.MetadataValue.json(report.stale_reasons)
    md["failed_ids"] = dg.MetadataValue.json(report.failed_ids[:PREVIEW])
    md["store_table"] = dg.MetadataValue.path(str(store.table_path(spec)))
    return md


def _result(report: StepReport, store: DeltaStore, spec: Any, context: Any) -> dg.MaterializeResult:
    context.log.info(report.summary())
    return dg.MaterializeResult(
        metadata=_metadata(report, store, spec),
        data_version=dg.DataVersion(data_version(store.read(spec, lazy=True))),
    )


def _code_version(spec: Any) -> str:
    return "|".join(f"{f.key}@{f.code_version}" for f in spec.fields)


def _delete_orphans(
    store: DeltaStore, spec: Any, orphaned: pl.DataFrame, report: StepReport
) -> None:
    if orphaned.height:
        report.deleted = store.delete(spec, orphaned)


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
        timer = Timer()
        store = DeltaStore(settings.store_root, graph)
        stored = store.read(spec)
        samples = scan(settings.corpus_dir, stored if stored.height else None)
        increment = store.resolve_update(spec, samples=samples).collect()
        report = StepReport.of(spec.key, increment)
        todo = increment.to_process()
        if todo.height:
            store.write(spec, todo)
        report.computed = todo.height
        # touched files (same content, new mtime): refresh the record so they are not re-hashed
        # next time; same provenance, so nothing downstream moves
        refreshed = _refreshed(samples, stored, todo)
        if refreshed.height:
            store.write(spec, refreshed)
        report.extra["mtime_refreshed"] = refreshed.height
        report.extra["documents"] = samples.height
        _delete_orphans(store, spec, increment.orphaned, report)
        report.path = "in-process" if todo.height else "none"
        report.seconds = timer.elapsed()
        return _result(report, store, spec, context)

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
        timer = Timer()
        store = DeltaStore(settings.store_root, graph)
        increment = store.resolve_update(spec).collect()
        report = StepReport.of(spec.key, increment)
        todo = increment.to_process()
        results: list[Any] = []
        if todo.height == 0:
            context.log.info(f"{spec.key}: up to date: 0 to process (no job, no Ray)")
        else:
            inputs = _todo_table(store, spec, todo, settings.corpus_dir)
            if todo.height <= settings.in_process_max_docs:
                report.path = "in-process"
                context.log.info(
                    f"{spec.key}: {todo.height} to process <= in_process_max_docs="
                    f"{settings.in_process_max_docs}: converting here, without Ray"
                )
                _convert_here(store, spec, inputs, settings)
            else:
                report.path = "ray"
                results = _convert_on_ray(context, compute, inputs, settings, ray)
            report.computed = todo.height
        _report_failures(context, store, spec, todo, report)
        _delete_orphans(store, spec, increment.orphaned, report)
        report.seconds = timer.elapsed()
        payload_md: dict[str, Any] = {}
        for r in results:
            if isinstance(r, dg.MaterializeResult):
                payload_md.update(r.metadata or {})
        result = _result(report, store, spec, context)
        yield dg.MaterializeResult(
            metadata={**payload_md, **(result.metadata or {})}, data_version=result.data_version
        )
        yield _failed_check(store, spec)

    return docs_converted


def _todo_table(store: DeltaStore, spec: Any, todo: pl.DataFrame, corpus_dir: Path) -> Any:
    """ids, absolute paths, sizes and provenance of the documents to convert (no contents)."""
    upstream = store.load_upstream(spec, todo).select("doc_id", "path", "size")
    root = str(Path(corpus_dir).absolute())
    frame = todo.select("doc_id", PROVENANCE_BY_FIELD, PROVENANCE).join(
        upstream, on="doc_id", how="left"
    )
    return frame.with_columns(
        pl.concat_str(pl.lit(root + "/"), pl.col("path")).alias("path")
    ).to_arrow()


def _convert_here(store: DeltaStore, spec: Any, inputs: Any, settings: F.Settings) -> None:
    from docs_pipeline.convert import convert_table

    rows = pl.from_arrow(convert_table(inputs, settings.converter))
    store.write_results(spec, rows, error_column="error")


def _convert_on_ray(
    context: Any, compute: ComputeResource, inputs: Any, settings: F.Settings, ray: RayOptions
) -> list[Any]:
    import pyarrow.parquet as pq

    slurm = compute.mode == "slurm"
    launcher = RayLauncher(
        ray=ray.executable or _ray_beside_python(compute),
        node_ip_command=ray.node_ip_command,
        ray_start_args=("--disable-usage-stats",),
    )
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
    }
    if ray.allow_loopback:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    options: dict[str, Any] = {"launcher": launcher, "extra_env": env}
    if slurm:
        options["queue"] = {
            "nodes": ray.nodes,
            "ntasks": ray.nodes,
            "cpus_per_task": ray.cpus_per_node,
            "mem": ray.mem,
            "time_limit": ray.time_limit,
        }
    with tempfile.TemporaryDirectory(prefix="dagster-hpc-docs-") as tmp:
        pq.write_table(inputs, Path(tmp) / TODO_FILE)
        staged = [Path(tmp) / TODO_FILE, engine_archive(tmp), pipeline_archive(tmp)]
        extras = {
            "docs": {
                "settings": F.settings_to_dict(settings),
                "store_root": str(Path(settings.store_root).absolute()),
                "todo_file": TODO_FILE,
                "code_version": settings.converter.code_version,
            }
        }
        completed = compute.run(
            context, CONVERT_PAYLOAD, extras=extras, extra_files=staged, **options
        )
        return list(completed.get_results())


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
        timer = Timer()
        store = DeltaStore(settings.store_root, graph)
        increment = store.resolve_update(spec).collect()
        report = StepReport.of(spec.key, increment)
        parents = increment.to_process()
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
        _delete_orphans(store, spec, increment.orphaned, report)
        report.seconds = timer.elapsed()
        return _result(report, store, spec, context)

    return docs_chunks


def embeddings_asset(settings: F.Settings, graph: FeatureGraph) -> dg.AssetsDefinition:
    spec = graph.feature(F.EMBEDDINGS)

    @dg.asset(
        key=spec.key.split("/"),
        deps=[dg.AssetKey(F.CHUNKS.split("/"))],
        group_name=GROUP,
        code_version=_code_version(spec),
        kinds={"pytorch"},
    )
    def docs_embeddings(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """One vector per chunk, only for chunks whose text changed."""
        timer = Timer()
        store = DeltaStore(settings.store_root, graph)
        increment = store.resolve_update(spec).collect()
        report = StepReport.of(spec.key, increment)
        todo = increment.to_process()
        if todo.height:
            ids = list(spec.id_columns)
            texts = store.load_upstream(spec, todo).select(*ids, "text")
            frame = todo.select(*ids, PROVENANCE_BY_FIELD, PROVENANCE).join(
                texts, on=ids, how="left"
            )
            embedder = settings.embedding.build()
            vectors = embedder.embed(frame["text"].to_list())
            out = frame.drop("text").with_columns(
                pl.Series("embedding", vectors, dtype=pl.List(pl.Float32))
            )
            store.write(spec, out)
            report.computed = todo.height
            report.extra["dimension"] = embedder.dimension
            report.path = "in-process"
        _delete_orphans(store, spec, increment.orphaned, report)
        report.seconds = timer.elapsed()
        return _result(report, store, spec, context)

    return docs_embeddings


def build_assets(settings: F.Settings, ray: RayOptions | None = None) -> list[dg.AssetsDefinition]:
    graph = F.build_graph(settings)
    return [
        source_asset(settings, graph),
        converted_asset(settings, graph, ray or RayOptions.from_env()),
        chunks_asset(settings, graph),
        embeddings_asset(settings, graph),
    ]
