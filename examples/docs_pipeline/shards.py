"""Ray batches of the documents to convert, cut from their estimated cost (cost.py: format and
file size from the source metadata; the driver never opens a file). Pure functions, no Ray.

Guided self-scheduling: a batch is a Ray Data block and, in the sink, one Delta merge commit, so
batches should be few; but the last batch decides when the job ends, so the last ones should be
small. Batch sizes therefore shrink as the work runs out: each is ``remaining / (GUIDED_DIVISOR
* workers)`` seconds of estimated work, never less than ``min_batch_s``. Ray Data hands the next
block to whichever actor is free, biggest first: an actor that drew a slow batch early is
balanced by the small ones at the end, and no actor waits longer than about one small batch.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

# remaining work / (this x workers) per batch: 2 halves the share of each worker's remaining work
# per round of batches (a dozen batches for 200 report-sized documents on 2 workers).
GUIDED_DIVISOR = 2
# Smallest batch, in seconds of estimated conversion: against ~0.2-0.5 s per batch for Ray
# Data's scheduling and the sink's Delta merge commit (measured on 2 cores), <= ~15% overhead.
MIN_BATCH_S = 3.0


def batch_targets(total_s: float, workers: int, min_batch_s: float = MIN_BATCH_S) -> list[float]:
    """The guided batch sizes (seconds of estimated work) for ``total_s`` on ``workers``."""
    if total_s <= 0:
        return []
    targets: list[float] = []
    remaining = total_s
    while remaining > 1e-9:
        size = min(remaining, max(remaining / (GUIDED_DIVISOR * max(1, workers)), min_batch_s))
        targets.append(size)
        remaining -= size
    return targets


def guided_batches(
    costs: Sequence[float], workers: int, min_batch_s: float = MIN_BATCH_S
) -> list[list[int]]:
    """Indices of ``costs`` in batches of shrinking size (``batch_targets``): documents placed
    most expensive first into the batch with the most room left. Every index once; each batch
    keeps index order; no empty batches; the biggest batch first."""
    if not costs:
        return []
    targets = batch_targets(sum(max(c, 0.0) for c in costs), workers, min_batch_s)
    targets = targets[: len(costs)] or [0.0]
    # (-room, position, members): the batch with the most room left on top
    heap = [(-t, s, []) for s, t in enumerate(targets)]
    heapq.heapify(heap)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        room, s, members = heapq.heappop(heap)
        members.append(i)
        heapq.heappush(heap, (room + max(costs[i], 0.0), s, members))
    filled = [(sum(max(costs[i], 0.0) for i in m), s, sorted(m)) for _, s, m in heap if m]
    return [members for _, _, members in sorted(filled, key=lambda g: (-g[0], g[1]))]
