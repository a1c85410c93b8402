"""Dagster integration of the incremental engine: an asset backed by a feature.

The asset resolves the increment, hands ONLY new + stale samples to the computation, makes sure
the results are stored, and reports what happened (new, stale, orphaned, skipped) as metadata.

Two ways to compute:
- ``payload=``: a script run through ``ComputeResource.run`` (local subprocess or Slurm job). It
  gets ``extras["incremental"]`` (feature key, store root, the file holding the samples to do,
  already joined with their upstream columns) and writes its results to the store itself with
  ``DeltaStore(root, graph).write(feature, results)``: the store must be on a filesystem that
  both the Dagster process and the payload see (as a cluster's shared filesystem is). Afterwards
  the asset checks that every sample it handed out was written.
- ``compute_fn=``: a Python function ``(samples) -> results`` run in the Dagster process, for
  cheap features and for tests.
With neither (root features only), the samples themselves are registered in the store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import polars as pl

from dagster_hpc.errors import ConfigError, PayloadError
from dagster_hpc.incremental import (
    DATA_VERSION,
    ERROR,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    STALE_REASON,
    DeltaStore,
    FeatureGraph,
    FeatureSpec,
    Increment,
)
from dagster_hpc.incremental.provenance import HASH_ALGORITHM, text_hash
from dagster_hpc.incremental.resolve import REASON_BOTH, REASON_CODE, REASON_DATA
from dagster_hpc.incremental.ship import engine_archive

# The file (in the payload's run directory) holding the samples to compute.
TODO_FILE = "incremental_todo.parquet"
EXTRAS_KEY = "incremental"
OrphanPolicy = Literal["keep", "delete"]
SamplesFn = Callable[[dg.AssetExecutionContext], pl.DataFrame]
ComputeFn = Callable[[pl.DataFrame], pl.DataFrame]
# How many failed ids the materialization's metadata names.
FAILED_IDS_IN_METADATA = 20
# resolve_update options an asset may pass on (the rest is the asset's own business).
RESOLVE_OPTIONS = frozenset({"filters", "target_filters", "stale_if", "skip_comparison"})
_CHECK_OPTIONS = frozenset({"filters", "target_filters"})


def feature_code_version(graph: FeatureGraph, feature: FeatureSpec | str) -> str:
    """The asset's code version: its fields' code versions, field deps and lineage, hashed.

    Dagster then calls the asset unsynced exactly when one of those changed (or an input's
    data version did), as the engine would reprocess it.
    """
    spec = graph.feature(feature)
    parts = [spec.key, HASH_ALGORITHM, ",".join(graph.resolve_key(spec))]
    inputs = graph.field_inputs(spec)
    for fld in spec.fields:
        refs = ";".join(f"{up}.{name}" for up, name in inputs[fld.key])
        parts.append(f"{fld.key}@{fld.code_version}<-{refs}")
    for dep in spec.feature_deps:
        parts.append(f"{dep.feature}:{dep.lineage!r}:optional={dep.optional}:{len(dep.filters)}")
    return f"{text_hash(chr(31).join(parts)):016x}"


def feature_data_version(store: DeltaStore, feature: FeatureSpec | str) -> dg.DataVersion:
    """An order-independent digest of every stored sample's data version (and their count)."""
    spec = store.graph.feature(feature)
    stored = store.read(spec, lazy=True)
    if DATA_VERSION not in stored.collect_schema().names():
        return dg.DataVersion("empty")
    count, total = (
        stored.select(pl.len(), pl.col(DATA_VERSION).reinterpret(signed=False).sum().fill_null(0))
        .collect()
        .row(0)
    )
    return dg.DataVersion(f"{count}-{total:016x}")


def feature_asset_key(feature: FeatureSpec | str) -> dg.AssetKey:
    """``video/crops`` -> AssetKey(["video", "crops"])."""
    key = feature.key if isinstance(feature, FeatureSpec) else feature
    return dg.AssetKey(key.split("/"))


def incremental_asset(
    feature: FeatureSpec,
    *,
    graph: FeatureGraph,
    store_root: str | Path,
    samples_fn: SamplesFn | None = None,
    payload: str | Path | Sequence[str] | None = None,
    compute_fn: ComputeFn | None = None,
    orphans: OrphanPolicy = "keep",
    compute_resource_key: str = "compute",
    extra_files: Sequence[str | Path] = (),
    ship_engine: bool = True,
    run_kwargs: Mapping[str, Any] | None = None,
    resolve_options: Mapping[str, Any] | None = None,
    **asset_kwargs: Any,
) -> dg.AssetsDefinition:
    """Declare an asset for ``feature`` (its upstream features' assets become its deps).

    ``samples_fn(context)`` gives a root feature's samples (id columns, a
    ``provenance_by_field`` struct, any data columns). ``run_kwargs`` go to
    ``ComputeResource.run`` (launcher, queue, extra_env ...). ``asset_kwargs`` go to
    ``dagster.asset`` (group_name, config_schema, description ...). ``ship_engine`` stages
    ``dagster_hpc_engine.zip`` (this engine, pure Python) next to the payload, so the cluster
    environment needs only polars, polars-hash, pyarrow and deltalake (see incremental/ship.py).
    ``resolve_options`` go to ``resolve_update`` (filters, target_filters, stale_if,
    skip_comparison). The asset's code version comes from the feature (see
    ``feature_code_version``); each materialization reports ``feature_data_version``.
    A ``compute_fn`` may return an ``error`` column: those samples are recorded as failed and
    come back next run; a payload records them with ``store.write_failed``.
    """
    spec = _validate(feature, graph, samples_fn, payload, compute_fn, orphans)
    options = dict(resolve_options or {})
    unknown = sorted(set(options) - RESOLVE_OPTIONS)
    if unknown:
        raise ConfigError(
            f"incremental_asset({spec.key!r}): unknown resolve_options {unknown}; "
            f"valid: {sorted(RESOLVE_OPTIONS)}"
        )
    if "code_version" in asset_kwargs:
        raise ConfigError(
            f"incremental_asset({spec.key!r}): the code version comes from the feature's field "
            "code versions; bump FieldSpec.code_version instead of passing code_version="
        )
    resource_keys = {compute_resource_key} if payload is not None else set()
    run_options = dict(run_kwargs or {})
    files = [Path(f) for f in extra_files]
    for reserved in ("extras", "extra_files"):
        if reserved in run_options:
            raise ConfigError(f"run_kwargs may not set {reserved!r}: the incremental asset sets it")

    @dg.asset(
        key=feature_asset_key(spec),
        deps=[feature_asset_key(up) for up in spec.upstream_keys],
        required_resource_keys=resource_keys,
        kinds={"polars", "deltalake"},
        code_version=feature_code_version(graph, spec),
        **asset_kwargs,
    )
    # `context` stays unannotated: Dagster inspects the annotation, and here it would be a string.
    def _incremental(context):
        store = DeltaStore(store_root, graph)
        samples = samples_fn(context) if samples_fn is not None else None
        increment = store.resolve_update(spec, samples=samples, **options).collect()
        todo = increment.to_process()
        results: list[Any] = []
        if increment.failed.height:
            context.log.info(
                f"{spec.key}: retrying {increment.failed.height} sample(s) that failed last time"
            )
        if todo.height:
            context.log.info(
                f"{spec.key}: computing {todo.height} sample(s) (new + stale + failed)"
            )
            if payload is not None:
                compute = getattr(context.resources, compute_resource_key)
                results = _run_payload(
                    context, compute, store, spec, todo, payload, files, ship_engine, run_options
                )
            elif compute_fn is not None:
                _run_in_process(store, spec, todo, compute_fn)
            else:
                store.write(spec, todo)
        else:
            context.log.info(f"{spec.key}: every sample is up to date; nothing to compute")
        failed = _failed_now(store, spec, todo) if todo.height else None
        if failed is not None and failed.height:
            shown = failed.head(FAILED_IDS_IN_METADATA).to_dicts()
            context.log.warning(f"{spec.key}: {failed.height} sample(s) failed: {shown}")
        deleted = store.delete(spec, increment.orphaned) if orphans == "delete" else 0
        metadata = _metadata(store, spec, increment, todo.height, deleted, failed)
        yield from _merge_results(results, metadata, feature_data_version(store, spec))

    return _incremental


def _validate(
    feature: FeatureSpec,
    graph: FeatureGraph,
    samples_fn: SamplesFn | None,
    payload: Any,
    compute_fn: ComputeFn | None,
    orphans: str,
) -> FeatureSpec:
    if not isinstance(graph, FeatureGraph):
        raise ConfigError(
            f"incremental_asset: graph must be a FeatureGraph, got {type(graph).__name__}"
        )
    spec = graph.feature(feature)
    if payload is not None and compute_fn is not None:
        raise ConfigError(
            f"incremental_asset({spec.key!r}): give payload= (run via ComputeResource) or "
            "compute_fn= (run in-process), not both"
        )
    if spec.is_root and samples_fn is None:
        raise ConfigError(
            f"incremental_asset({spec.key!r}) is a root feature: pass samples_fn=(context) -> "
            "DataFrame with its id columns and a provenance_by_field struct"
        )
    if not spec.is_root and samples_fn is not None:
        raise ConfigError(
            f"incremental_asset({spec.key!r}): samples_fn is for root features; this one is "
            f"resolved from its upstream features {list(spec.upstream_keys)}"
        )
    if not spec.is_root and payload is None and compute_fn is None:
        raise ConfigError(
            f"incremental_asset({spec.key!r}): a downstream feature needs payload= or compute_fn= "
            "to compute its samples"
        )
    if orphans not in ("keep", "delete"):
        raise ConfigError(
            f"incremental_asset({spec.key!r}): orphans must be 'keep' or 'delete', got {orphans!r}"
        )
    return spec


def _inputs(store: DeltaStore, spec: FeatureSpec, todo: pl.DataFrame) -> pl.DataFrame:
    """The samples to compute with their upstream data columns joined (root: as given)."""
    if spec.is_root:
        return todo
    upstream = store.load_upstream(spec, todo)
    return todo.join(upstream, on=list(store.graph.resolve_key(spec)), how="left")


def _run_in_process(
    store: DeltaStore, spec: FeatureSpec, todo: pl.DataFrame, compute_fn: ComputeFn
) -> None:
    computed = compute_fn(_inputs(store, spec, todo))
    if not isinstance(computed, pl.DataFrame):
        raise PayloadError(
            f"compute_fn for {spec.key!r} returned {type(computed).__name__}, expected a polars "
            "DataFrame with the id columns and the computed columns"
        )
    key = list(store.graph.resolve_key(spec))
    keep = [c for c in computed.columns if c not in (PROVENANCE, PROVENANCE_BY_FIELD)]
    rows = todo.select(key + [PROVENANCE_BY_FIELD, PROVENANCE]).join(computed.select(keep), on=key)
    parents = todo if store.graph.is_expansion(spec) else None
    store.write_results(spec, rows, error_column=ERROR, parents=parents)
    _check_written(store, spec, todo, "compute_fn")


def _run_payload(
    context: dg.AssetExecutionContext,
    compute: Any,
    store: DeltaStore,
    spec: FeatureSpec,
    todo: pl.DataFrame,
    payload: Any,
    files: list[Path],
    ship_engine: bool,
    run_options: dict[str, Any],
) -> list[Any]:
    with tempfile.TemporaryDirectory(prefix="dagster-hpc-incremental-") as tmp:
        todo_file = Path(tmp) / TODO_FILE
        _inputs(store, spec, todo).write_parquet(todo_file)
        staged = [*files, todo_file]
        if ship_engine:
            staged.append(engine_archive(tmp))
        extras = {
            EXTRAS_KEY: {
                "feature": spec.key,
                "store_root": str(Path(store.root).absolute()),
                "todo_file": TODO_FILE,
                "samples": todo.height,
            }
        }
        completed = compute.run(context, payload, extras=extras, extra_files=staged, **run_options)
        results = list(completed.get_results())
    _check_written(store, spec, todo, f"payload {payload!r}")
    return results


def _check_written(store: DeltaStore, spec: FeatureSpec, todo: pl.DataFrame, who: str) -> None:
    """Every handed-out sample is stored with its expected provenance or recorded as failed."""
    key = list(store.graph.resolve_key(spec))
    done = store.settled(spec, todo)
    if done.height != todo.height:
        missing = todo.join(done, on=key, how="anti").select(key).head(5).to_dicts()
        raise PayloadError(
            f"{who} for feature {spec.key!r} finished, but only {done.height} of the "
            f"{todo.height} samples it was given are stored with their expected provenance or "
            f"recorded as failed (missing e.g. {missing}). The payload must write its results "
            f"with DeltaStore(extras['{EXTRAS_KEY}']['store_root'], graph).write(feature, rows) "
            "(or write_results / write_failed), keeping the provenance columns of the samples "
            "it received."
        )


def _failed_now(store: DeltaStore, spec: FeatureSpec, todo: pl.DataFrame) -> pl.DataFrame:
    """The handed-out samples this run recorded as failed (key + last_error + failures)."""
    key = list(store.graph.resolve_key(spec))
    failed = store.read_failed(spec)
    if not failed.height:
        return failed.select(key)
    return failed.join(todo.select(key + [PROVENANCE]), on=key + [PROVENANCE], how="semi").drop(
        PROVENANCE
    )


def _metadata(
    store: DeltaStore,
    spec: FeatureSpec,
    increment: Increment,
    computed: int,
    deleted: int,
    failed: pl.DataFrame | None,
) -> dict[str, Any]:
    inc = increment.collect()
    counts = inc.counts()
    # Counted at the resolve key (parents of an expansion), like new / stale / computed.
    key = list(store.graph.resolve_key(spec))
    stored = store.read(spec, lazy=True)
    if store.graph.is_expansion(spec):
        stored = stored.select(key).unique()
    stored_before_or_now = stored.select(pl.len()).collect().item()
    reasons = inc.stale[STALE_REASON].value_counts() if inc.stale.height else None
    by_reason = {r: 0 for r in (REASON_CODE, REASON_DATA, REASON_BOTH)}
    if reasons is not None:
        for row in reasons.iter_rows():
            by_reason[row[0]] = int(row[1])
    # Up to date = stored now, minus what was just (re)computed, minus orphans still kept.
    orphaned_keys = inc.orphaned.select(key).unique().height if counts["orphaned"] else 0
    deleted_keys = orphaned_keys if deleted else 0
    skipped = stored_before_or_now - computed - (orphaned_keys - deleted_keys)
    return {
        "new": counts["new"],
        "stale": counts["stale"],
        "orphaned": counts["orphaned"],
        "skipped": max(skipped, 0),
        "computed": computed,
        "orphans_deleted": deleted,
        "stale_code_changed": by_reason[REASON_CODE],
        "stale_data_changed": by_reason[REASON_DATA],
        "stale_code_and_data_changed": by_reason[REASON_BOTH],
        "retried_failed": counts["failed"],
        "failed": 0 if failed is None else failed.height,
        "failed_ids": dg.MetadataValue.json(
            [] if failed is None else failed.head(FAILED_IDS_IN_METADATA).to_dicts()
        ),
        "store_table": dg.MetadataValue.path(str(store.table_path(spec))),
        "dagster/column_schema": _column_schema(store, spec),
    }


def _column_schema(store: DeltaStore, spec: FeatureSpec) -> dg.TableSchema:
    schema = store.read(spec, lazy=True).collect_schema()
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()]
    )


def _merge_results(results: list[Any], metadata: dict[str, Any], data_version: dg.DataVersion):
    """One materialization: the payload's reported metadata plus ours; checks pass through."""
    merged: dict[str, Any] = {}
    for result in results:
        if isinstance(result, dg.MaterializeResult):
            merged.update(result.metadata or {})
        else:
            yield result
    merged.update(metadata)
    yield dg.MaterializeResult(metadata=merged, data_version=data_version)


def incremental_source(
    feature: FeatureSpec,
    *,
    graph: FeatureGraph,
    store_root: str | Path,
    samples_fn: SamplesFn,
    orphans: OrphanPolicy = "keep",
    **source_kwargs: Any,
) -> dg.SourceAsset:
    """A root feature as an observable source asset.

    Each observation registers the samples ``samples_fn(context)`` gives (new and stale ones
    are written; orphans deleted with ``orphans="delete"``) and reports the feature's
    DataVersion, so the assets downstream show as unsynced exactly when the samples changed.
    ``source_kwargs`` go to ``dagster.observable_source_asset`` (group_name, description ...).
    """
    spec = graph.feature(feature)
    if not spec.is_root:
        raise ConfigError(
            f"incremental_source({spec.key!r}): only a root feature can be a source; this one "
            f"depends on {list(spec.upstream_keys)} (use incremental_asset)"
        )
    if orphans not in ("keep", "delete"):
        raise ConfigError(
            f"incremental_source({spec.key!r}): orphans must be 'keep' or 'delete', got {orphans!r}"
        )

    @dg.observable_source_asset(key=feature_asset_key(spec), **source_kwargs)
    def _source(context):
        store = DeltaStore(store_root, graph)
        increment = store.resolve_update(spec, samples=samples_fn(context))
        todo = increment.to_process()
        store.write(spec, todo)
        deleted = store.delete(spec, increment.orphaned) if orphans == "delete" else 0
        counts = increment.counts()
        metadata = {
            "new": counts["new"],
            "stale": counts["stale"],
            "orphaned": counts["orphaned"],
            "registered": todo.height,
            "orphans_deleted": deleted,
            "store_table": dg.MetadataValue.path(str(store.table_path(spec))),
            "dagster/column_schema": _column_schema(store, spec),
        }
        return dg.ObserveResult(data_version=feature_data_version(store, spec), metadata=metadata)

    return _source
