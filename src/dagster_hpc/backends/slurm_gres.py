"""GPU requests checked against the partition before anything is submitted.

The preflight asks ``sinfo --format='%R;%G'`` once (cached with the rest of the answer): a job
that wants GPUs on a partition whose nodes have none, or more GPUs per node than any node has,
fails here with the partitions that do have GPUs, instead of sbatch's "Requested node
configuration is not available" (or a job pending forever).
"""

from __future__ import annotations

import re

from dagster_hpc.errors import ConfigError

# "gpu:2", "gpu:a100:4", "gpu:a100:4(S:0-1)", several separated by commas inside one %G value
_GPU_RE = re.compile(r"gpu(?::([A-Za-z0-9_.-]+))?:(\d+)")


def partition_gpus(text: str) -> dict[str, dict[str, int]]:
    """``gres=`` preflight value ("debug;(null),gpu;gpu:2,") -> partition: {type or "": most per node}."""
    out: dict[str, dict[str, int]] = {}
    for group in filter(None, text.split(",")):
        name, _, gres = group.partition(";")
        name = name.strip()
        if not name:
            continue
        per = out.setdefault(name, {})
        for match in _GPU_RE.finditer(gres):
            kind, count = match.group(1) or "", int(match.group(2))
            for k in {kind, ""}:
                per[k] = max(per.get(k, 0), count)
    return out


def check_partition_gpus(
    text: str,
    *,
    gpus_per_node: int | None,
    gres_type: str | None,
    partition: str | None,
    cluster: str,
) -> None:
    if not gpus_per_node or not text or partition is None:
        return
    gpus = partition_gpus(text)
    if partition not in gpus:
        return  # the preflight did not see this partition: do not guess
    have = gpus[partition].get(gres_type or "", 0)
    with_gpus = sorted(p for p, g in gpus.items() if g.get(gres_type or "", 0) > 0)
    what = f"{gres_type} GPUs" if gres_type else "GPUs"
    if have == 0:
        raise ConfigError(
            f"the job asks for {gpus_per_node} {what} per node but partition {partition!r} on {cluster} "
            f"has no nodes with {what}: use "
            + (f"a GPU partition ({', '.join(with_gpus)})" if with_gpus else "a cluster with GPUs")
            + " (queue partition=...)"
        )
    if gpus_per_node > have:
        raise ConfigError(
            f"the job asks for {gpus_per_node} {what} per node but the nodes of partition {partition!r} "
            f"on {cluster} have at most {have}: ask for at most {have} per node (spread over nodes instead)"
        )
