"""The facade's entry points for many items in one step (``ComputeResource.run_array`` and a
``run`` over a partition range); validation first, then ``allocation.runner``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_hpc.allocation.array import DEFAULT_MAX_ARRAY_SIZE, check_throttle
from dagster_hpc.allocation.results import MultiTaskInvocation, MultiTaskOutcome
from dagster_hpc.allocation.runner import run_array_local, run_array_slurm
from dagster_hpc.allocation.tasks import TaskItem, normalize_items
from dagster_hpc.errors import ConfigError
from dagster_hpc.retention import apply_retention, check_keep_run_dirs, should_remove


def multi_partition_keys(context: Any) -> list[str] | None:
    """The partition keys of a step that materializes SEVERAL partitions at once (a single-run
    backfill, ``BackfillPolicy.single_run()``), else None (one partition: an ordinary job)."""
    if not isinstance(context, dg.AssetExecutionContext) or not context.has_assets_def:
        return None
    if context.assets_def.partitions_def is None or not context.has_partition_key_range:
        return None
    keys = list(context.partition_keys)
    return keys if len(keys) > 1 else None


def run_items(
    resource: Any,
    context: Any,
    payload: Any,
    items: Sequence[TaskItem],
    *,
    partition_mode: bool,
    launcher: Any = None,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    extra_files: Sequence[str | Path] = (),
    queue: Any = None,
    throttle: int | None = None,
) -> MultiTaskOutcome:
    from dagster_hpc.compute import prepare_call

    check_keep_run_dirs(resource.keep_run_dirs)
    check_throttle(throttle)
    backend, _, job = prepare_call(
        resource, context, payload, launcher=launcher, args=args, extra_env=extra_env,
        extras=extras, extra_files=extra_files, queue=queue,
    )  # fmt: skip
    if job.queue is not None:
        job.queue.refuse_requeue("arrays (run_array / run_partitions)")
    request = job.request
    base_env = dict(resource.extra_env)
    if backend.name == "slurm":
        answer = backend.preflight_answer()
        raw = answer.get("max_array_size", "")
        max_size = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_ARRAY_SIZE
        outcome = run_array_slurm(
            context,
            backend,
            request,
            items,
            partition_mode=partition_mode,
            base_env=base_env,
            extras=dict(request.extras),
            throttle=throttle,
            max_array_size=max_size,
            queue=job.queue,
            python=job.python,
            remove_if_succeeded=should_remove(resource.keep_run_dirs, succeeded=True),
        )
        handle_backend = backend
    else:
        outcome = run_array_local(
            context,
            backend,
            request,
            items,
            partition_mode=partition_mode,
            base_env=base_env,
            extras=dict(request.extras),
            throttle=throttle,
            python=job.python,
        )
        handle_backend = backend
    from dagster_hpc.backends.base import JobHandle

    handle = JobHandle(
        backend=backend.name, job_id=",".join(outcome.job_ids), run_dir=outcome.run_dir
    )
    failed = bool(outcome.failed)
    if failed:
        _observe_failures(context, outcome)
    apply_retention(context, handle_backend, handle, resource.keep_run_dirs, succeeded=not failed)
    return outcome


def run_partitions(
    resource: Any, context: dg.AssetExecutionContext, payload: Any, keys: list[str], **kw: Any
) -> MultiTaskInvocation:
    """One array task per partition key of the step; each partition's metadata goes to its
    own materialization; a failure names every failed key (the step fails)."""
    items = [TaskItem(key=k) for k in keys]
    outcome = run_items(resource, context, payload, items, partition_mode=True, **kw)
    err = outcome.error()
    if err is not None:
        raise err
    selected = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
    targets: list[dg.AssetKey | None] = list(selected) if len(selected) > 1 else [None]
    for result in outcome.results:
        for key in targets:
            context.add_asset_metadata(result.metadata, asset_key=key, partition_key=result.key)
    return MultiTaskInvocation(outcome, selected)


def run_array(
    resource: Any, context: Any, payload: Any, items: Sequence[Any], **kw: Any
) -> MultiTaskOutcome:
    """Fan-out inside one step: one task per item (sweep point, shard), each with its own
    extras, Pipes channel and results. Raises PayloadError naming every failed item."""
    normalized = normalize_items(items)
    outcome = run_items(resource, context, payload, normalized, partition_mode=False, **kw)
    err = outcome.error()
    if err is not None:
        raise err
    return outcome


def _observe_failures(context: Any, outcome: MultiTaskOutcome) -> None:
    """Failed items' metrics land in the run's event log (the step itself fails)."""
    if not getattr(context, "has_assets_def", False):
        return
    for r in outcome.failed:
        context.log.warning(
            f"dagster-hpc: item {r.key} failed: {r.state}, exit code {r.exit_code}, job {r.job_id}"
        )


def check_items_arg(items: Any) -> None:
    if items is None:
        raise ConfigError("run_array needs items=[...]")
