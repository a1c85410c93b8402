"""Kinds and tags for assets that run through ``ComputeResource``: the ``slurm`` kind in the UI.

Dagster fixes an asset's kinds and tags when the definitions load, long before a resource
runs, so they cannot come from the job itself. ``hpc_asset_args`` reads the very configuration
that picks the mode (the ``ComputeResource`` given to ``Definitions``, or ``DAGSTER_HPC_MODE``)
and returns the decorator arguments::

    compute = compute_from_env()

    @dg.asset(**hpc_asset_args(compute, kinds={"python"}, queue={"partition": "gpu"}))
    def train(context, compute: ComputeResource): ...

In slurm mode the asset gets the ``slurm`` kind (Dagster ships its icon) and the partition and
QOS it will be submitted with as tags (``dagster-hpc/partition``, ``dagster-hpc/qos``); the
per-asset ``queue`` lands in the asset's ``dagster-hpc/queue`` metadata, which the backend
merges over the resource's default queue, so the tag and the submitted job cannot disagree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dagster_hpc.queue import QUEUE_METADATA_KEY, QueueConfig

if TYPE_CHECKING:
    from dagster_hpc.compute import ComputeResource

# The variable the example project (and most deployments) choose the mode with.
MODE_ENV = "DAGSTER_HPC_MODE"
SLURM_KIND = "slurm"
TAG_PREFIX = "dagster-hpc/"
# Dagster tag values: at most 63 characters of letters, digits, "-", "_" and ".".
_TAG_VALUE_RE = re.compile(r"[^A-Za-z0-9_.-]")
_TAG_VALUE_MAX = 63


def _plain(value: Any) -> Any:
    """A field configured as ``dg.EnvVar("X")`` holds the variable's name until resolved."""
    get_value = getattr(value, "get_value", None)
    return get_value() if callable(get_value) else value


def resolve_mode(compute: ComputeResource | str | None = None) -> str:
    """The mode ``compute`` runs in; without one, ``$DAGSTER_HPC_MODE`` (default local)."""
    if compute is None:
        return os.environ.get(MODE_ENV, "local") or "local"
    if isinstance(compute, str):
        return compute
    return str(_plain(compute.mode))


def _effective_queue(
    compute: ComputeResource | str | None, queue: QueueConfig | Mapping[str, Any] | None
) -> QueueConfig:
    from dagster_hpc.backends.slurm_resource import SlurmResource

    slurm = getattr(compute, "slurm", None)
    base = slurm.queue if slurm is not None else SlurmResource.from_env().queue
    return base.merged(queue)


def _tag_value(value: str) -> str:
    return _TAG_VALUE_RE.sub("_", value)[:_TAG_VALUE_MAX]


def hpc_kinds(compute: ComputeResource | str | None = None, kinds: Iterable[str] = ()) -> set[str]:
    """``kinds`` plus ``slurm`` when ``compute`` runs in slurm mode."""
    out = set(kinds)
    if resolve_mode(compute) == "slurm":
        out.add(SLURM_KIND)
    return out


def hpc_tags(
    compute: ComputeResource | str | None = None,
    queue: QueueConfig | Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """``dagster-hpc/partition`` and ``dagster-hpc/qos`` of the job (slurm mode, when set)."""
    if resolve_mode(compute) != "slurm":
        return {}
    effective = _effective_queue(compute, queue)
    tags = {}
    for field in ("partition", "qos"):
        value = getattr(effective, field)
        if value:
            tags[TAG_PREFIX + field] = _tag_value(value)
    return tags


def hpc_asset_args(
    compute: ComputeResource | str | None = None,
    *,
    kinds: Iterable[str] = (),
    queue: QueueConfig | Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``kinds``, ``tags`` and ``metadata`` for ``@dg.asset`` / ``dg.AssetSpec``.

    ``queue`` is this asset's resource request on top of the resource's default (validated now:
    a bad value fails when the definitions load, not at 3 a.m.).
    """
    md = dict(metadata or {})
    if queue is not None:
        md[QUEUE_METADATA_KEY] = QueueConfig.from_mapping(queue).model_dump(exclude_defaults=True)
    return {
        "kinds": hpc_kinds(compute, kinds),
        "tags": {**hpc_tags(compute, queue), **(tags or {})},
        "metadata": md,
    }
