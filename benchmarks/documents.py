"""The document pipeline vs a plain Docling loop, in one run on one generated corpus.

    ENV=$(bash scripts/docs-env.sh)
    PYTHONPATH=src:examples $ENV/bin/python benchmarks/documents.py [--docs 200] [--changed 20]

- round 1 (initial load): docs/converted of ours (Ray Data, an actor pool over size-balanced
  shards on a one-node RayLauncher cluster using this machine's cores) vs a plain
  single-process Docling loop over the same files (a fresh process: import, converter, loop);
- round 2 (``--changed`` documents edited): ours (the increment: the changed documents only;
  below in_process_max_docs it converts in the step's process) vs the floor (the same plain loop
  over only the changed documents) and vs full reconversion (what asset-level invalidation
  costs: ours converting the whole corpus again, i.e. round 1's wall);
- round 3 (no change): the wall of the four assets (nothing to do anywhere).

Walls are the Dagster step of docs/converted (resolve, convert, write) with the in-process
executor, from the Dagster process (Dagster already imported, like a running deployment);
round 3 covers all four assets. Embeddings use the weight-free hashing model here (the benchmark
is about conversion). Writes benchmarks/results/documents.json, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "documents.json"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "examples")]

import dagster as dg  # noqa: E402
from docs_pipeline import corpus  # noqa: E402
from docs_pipeline.assets import build_assets  # noqa: E402
from docs_pipeline.embed import EmbeddingConfig  # noqa: E402
from docs_pipeline.features import CONVERTED, Settings  # noqa: E402

from dagster_hpc import ComputeResource  # noqa: E402

# The plain loop: what a user writes without the pipeline (one process, one converter).
LOOP = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from docs_pipeline.convert import DoclingConverter
conv = DoclingConverter()
t1 = time.perf_counter()
ok = sum(conv.convert_file(p)["status"] != "failed" for p in sys.argv[3:])
t2 = time.perf_counter()
open(sys.argv[2], "w").write(f"{t1 - t0} {t2 - t1} {ok}")
"""


def plain_loop(paths: list[Path], out_dir: Path) -> dict[str, float]:
    """Wall of a fresh process converting ``paths`` one after another (import included)."""
    out = out_dir / f"loop-{len(paths)}.txt"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", LOOP, str(ROOT / "examples"), str(out), *map(str, paths)],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    setup, loop, ok = out.read_text().split()
    return {"wall_s": wall, "setup_s": float(setup), "loop_s": float(loop), "converted": int(ok)}


def materialize(assets: list, keys: list[str], compute: ComputeResource) -> tuple[float, dict]:
    selection = [dg.AssetKey(k.split("/")) for k in keys]
    started = time.perf_counter()
    result = dg.materialize(assets, selection=selection, resources={"compute": compute})
    wall = time.perf_counter() - started
    metadata = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        metadata["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
    return wall, metadata


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--changed", type=int, default=20)
    args = parser.parse_args()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="dhpc-bench-docs-"))
    try:
        settings = Settings(
            corpus_dir=work / "corpus",
            store_root=work / "store",
            embedding=EmbeddingConfig(model="hashing"),
        )
        paths = corpus.generate(settings.corpus_dir, args.docs, broken=False)
        assets = build_assets(settings)
        compute = ComputeResource(base_dir=str(work / "runs"))
        everything = [a.key.to_user_string() for a in assets]
        source, converted = "docs/source", CONVERTED

        loop_all = plain_loop(paths, work)
        materialize(assets, [source], compute)
        r1_wall, r1 = materialize(assets, [converted], compute)
        materialize(assets, everything[2:], compute)  # chunks + embeddings: round 3 sees no work

        changed = list(range(0, args.docs, max(1, args.docs // args.changed)))[: args.changed]
        changed_paths = corpus.edit_documents(settings.corpus_dir, changed)
        materialize(assets, [source], compute)
        r2_wall, r2 = materialize(assets, [converted], compute)
        loop_changed = plain_loop(changed_paths, work)
        materialize(assets, everything[2:], compute)

        r3_wall, r3 = materialize(assets, everything, compute)
        assert all(md["computed"] == 0 for md in r3.values()), r3

        ours_r1 = r1[converted]
        ours_r2 = r2[converted]
        result = {
            "docs": args.docs,
            "cpus": os.cpu_count(),
            "round1_docs_per_s_ours": round(args.docs / r1_wall, 2),
            "round1_docs_per_s_loop": round(args.docs / loop_all["wall_s"], 2),
            "round1_ours_vs_loop_throughput": round(loop_all["wall_s"] / r1_wall, 2),
            "round1_ours_s": round(r1_wall, 2),
            "round1_ours_path": ours_r1["path"],
            "round1_ray_actors": ours_r1.get("ray/actors"),
            "round1_ray_convert_s": ours_r1.get("ray/convert_s"),
            "round1_loop": {k: round(v, 2) for k, v in loop_all.items()},
            "round2_docs_changed": len(changed_paths),
            "round2_docs_converted": ours_r2["computed"],
            "round2_ours_s": round(r2_wall, 2),
            "round2_ours_path": ours_r2["path"],
            "round2_floor": {k: round(v, 2) for k, v in loop_changed.items()},
            "round2_vs_floor": round(r2_wall / loop_changed["wall_s"], 2),
            "round2_vs_full": round(r2_wall / r1_wall, 3),
            "round2_vs_full_loop": round(r2_wall / loop_all["wall_s"], 3),
            "round3_s": round(r3_wall, 2),
            "round3_assets": len(r3),
            "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
