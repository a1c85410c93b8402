"""Node counts checked against the partition before anything is submitted.

The preflight asks ``scontrol show partition -o`` once (cached with the rest of the answer) for
each partition's TotalNodes and MaxNodes. ``nodes=5`` on a 4-node partition used to be
submitted and then pend forever with reason PartitionNodeLimit (the step waited forever).
"""

from __future__ import annotations

from dagster_hpc.errors import ConfigError

# One line of the preflight: PartitionName;MaxNodes;TotalNodes (MaxNodes may be UNLIMITED).
NODES_PREFLIGHT = (
    "echo nodes=$(scontrol show partition -o 2>/dev/null | sed -n "
    "'s/^PartitionName=\\([^ ]*\\) .* MaxNodes=\\([^ ]*\\) .* TotalNodes=\\([^ ]*\\) .*/\\1;\\2;\\3/p' "
    "| tr '\\n' ',')"
)


def partition_nodes(text: str) -> dict[str, tuple[int, int | None]]:
    """``nodes=`` preflight value ("debug;UNLIMITED;4,") -> partition: (total nodes, max per job)."""
    out: dict[str, tuple[int, int | None]] = {}
    for group in filter(None, text.split(",")):
        parts = [p.strip() for p in group.split(";")]
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        name, max_text, total = parts
        out[name] = (int(total), int(max_text) if max_text.isdigit() else None)
    return out


def check_partition_nodes(
    text: str, *, nodes: int | None, partition: str | None, cluster: str
) -> None:
    """ConfigError when the job asks for more nodes than the partition has or allows per job."""
    if not nodes or not text or partition is None:
        return
    known = partition_nodes(text).get(partition)
    if known is None:
        return  # the preflight did not see this partition: do not guess
    total, max_per_job = known
    where = f"partition {partition!r} on {cluster}"
    if nodes > total:
        raise ConfigError(
            f"nodes={nodes} but the {where} has only {total} nodes: the job could never start "
            f"(Slurm would keep it pending with reason PartitionNodeLimit). Ask for at most {total} "
            "nodes or use a bigger partition (see `dagster-hpc doctor`); nothing was submitted."
        )
    if max_per_job is not None and nodes > max_per_job:
        raise ConfigError(
            f"nodes={nodes} but the {where} allows at most {max_per_job} nodes per job (MaxNodes): "
            f"ask for at most {max_per_job}; nothing was submitted."
        )
