"""The seed demo as a script: three rounds, each printed as tables.

    uv run python examples/incremental_demo/run_demo.py [STORE_DIR]

Round 1 loads 3 samples (new=3); round 2 changes one value, adds one and removes one
(downstream new=1 stale=1, one orphan deleted); round 3 changes nothing (nothing to do).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import polars as pl

if __package__ in (None, ""):  # run as a script: make `incremental_demo` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster_hpc.incremental import STALE_FIELDS, STALE_REASON, DeltaStore, MetadataStore  # noqa: E402
from incremental_demo.features import (  # noqa: E402
    DERIVED,
    GRAPH,
    RAW,
    ROUNDS,
    compute_derived,
    raw_samples,
)


def run_round(store: MetadataStore, rows: list[dict]) -> dict[str, dict[str, int]]:
    """One round: resolve and write raw, delete its orphans, then resolve and compute derived."""
    counts: dict[str, dict[str, int]] = {}
    raw_inc = store.resolve_update(RAW, samples=raw_samples(rows))
    counts[RAW.key] = raw_inc.counts()
    store.write(RAW, raw_inc.to_process())
    store.delete(RAW, raw_inc.orphaned)

    derived_inc = store.resolve_update(DERIVED)
    counts[DERIVED.key] = derived_inc.counts()
    todo = derived_inc.to_process()
    if todo.height:
        inputs = store.load_upstream(DERIVED, todo)
        results = compute_derived(inputs).select("sample_uid", "result", "value_bucket")
        store.write(DERIVED, todo.join(results, on="sample_uid"))
    store.delete(DERIVED, derived_inc.orphaned)
    if derived_inc.stale.height:
        print("why stale:")
        print(derived_inc.stale.select("sample_uid", STALE_FIELDS, STALE_REASON))
    return counts


def main(root: str) -> None:
    store = DeltaStore(root, GRAPH)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    for number, rows in enumerate(ROUNDS, start=1):
        print(f"\n=== round {number} ===")
        counts = run_round(store, rows)
        print(pl.DataFrame([{"feature": k, **v} for k, v in counts.items()]))
        print(store.read(DERIVED).select("sample_uid", "result", "value_bucket").sort("sample_uid"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="incremental-demo-"))
