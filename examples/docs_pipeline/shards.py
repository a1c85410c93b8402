"""Shards of the documents to convert, balanced by file size (from the source metadata: the
driver never opens a file). Pure functions, no Ray."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

# Shards per actor: more than one, so an actor that drew a slow shard does not leave the others
# idle at the end (Ray Data hands the next shard to whichever actor is free); few enough that the
# per-batch overhead stays negligible against Docling's per-document cost.
SHARDS_PER_ACTOR = 4


def shard_count(documents: int, actors: int, per_actor: int = SHARDS_PER_ACTOR) -> int:
    if documents <= 0:
        return 0
    return max(1, min(documents, actors * per_actor))


def balance_by_size(sizes: Sequence[int], shards: int) -> list[list[int]]:
    """Indices of ``sizes`` in ``shards`` groups of near-equal total size (largest first into the
    currently lightest shard: within 4/3 of the optimum). Each group keeps index order; empty
    groups are dropped; the heaviest group comes first (Ray Data then starts it first)."""
    if shards <= 0 or not sizes:
        return []
    heap = [(0, s, []) for s in range(min(shards, len(sizes)))]
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    for i in order:
        total, s, members = heapq.heappop(heap)
        members.append(i)
        heapq.heappush(heap, (total + max(sizes[i], 0), s, members))
    groups = sorted(heap, key=lambda g: (-g[0], g[1]))
    return [sorted(members) for _, _, members in groups if members]
