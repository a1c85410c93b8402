"""The document pipeline vs a plain Docling loop, in one run on one generated corpus.

    ENV=$(bash scripts/docs-env.sh)
    PYTHONPATH=src:examples $ENV/bin/python benchmarks/documents.py [--docs 200] [--changed 20]
        [--round1-pairs 3]

- round 1 (initial load): docs/converted of ours (Ray Data, an actor pool of warm converters over
  cost-cut batches on a private one-node Ray using this machine's cores) vs a plain
  single-process Docling loop over the same files (a fresh process: import, converter, loop),
  in ``--round1-pairs`` pairs run back to back (alternating which goes first; ours on a fresh
  store each time): the figure is the median pair's ratio, every pair is in the JSON;
- round 2 (``--changed`` documents edited): ours (the increment: the changed documents only;
  below the cost threshold it converts in the step's process) vs the floor (the same plain loop
  over only the changed documents) and vs full reconversion (what asset-level invalidation
  costs: ours converting the whole corpus again, i.e. round 1's wall);
- round 3 (no change): the wall of the four assets (nothing to do anywhere).

Walls are the Dagster step of docs/converted (resolve, convert, write) with the in-process
executor, from the Dagster process (Dagster already imported, like a running deployment);
round 3 covers all four assets. Embeddings use the weight-free hashing model here (the benchmark
is about conversion). The corpus is the generator's ``report`` profile (documents the size of
real reports, all six formats; ``--profile brief`` for the example's small ones). Where ours
converts follows the pipeline's own cost rule (cost.py), as for a user. Writes
benchmarks/results/documents.json, with the load average and the plain loop's per-format
figures (what cost.SECONDS_PER_MB is set from).
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
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Round 1 pairs (plain loop + ours, back to back): the median pair's ratio is the figure.
ROUND1_PAIRS = 3
RESULTS = ROOT / "benchmarks" / "results" / "documents.json"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "examples")]

import dagster as dg  # noqa: E402
from docs_pipeline import corpus, cost  # noqa: E402
from docs_pipeline.assets import build_assets  # noqa: E402
from docs_pipeline.embed import EmbeddingConfig  # noqa: E402
from docs_pipeline.features import CONVERTED, Settings  # noqa: E402

from dagster_hpc import ComputeResource  # noqa: E402

# The plain loop: what a user writes without the pipeline (one process, one converter with the
# same options as ours, the files one after another). Per file: its wall seconds.
LOOP = """
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from docs_pipeline.convert import DoclingConverter
conv = DoclingConverter()
t1, c1 = time.perf_counter(), cpu()
per_file = []
for p in sys.argv[3:]:
    t = time.perf_counter()
    ok = conv.convert_file(p)["status"] != "failed"
    per_file.append((p, time.perf_counter() - t, ok))
t2, c2 = time.perf_counter(), cpu()
out = {"setup_s": t1 - t0, "loop_s": t2 - t1, "loop_cpu_s": c2 - c1, "files": per_file}
json.dump(out, open(sys.argv[2], "w"))
"""


def plain_loop(paths: list[Path], out_dir: Path) -> tuple[dict[str, float], list]:
    """Wall of a fresh process converting ``paths`` one after another (import included), and
    the per-file seconds."""
    out = out_dir / f"loop-{len(paths)}.json"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", LOOP, str(ROOT / "examples"), str(out), *map(str, paths)],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    got = json.loads(out.read_text())
    converted = sum(1 for _, _, ok in got["files"] if ok)
    summary = {
        "wall_s": wall,
        "setup_s": got["setup_s"],
        "loop_s": got["loop_s"],
        # CPU seconds of the loop (all threads) over its wall: the cores one converter uses
        "loop_cores": got["loop_cpu_s"] / got["loop_s"],
        "converted": converted,
    }
    return summary, got["files"]


def per_format(files: list) -> dict[str, dict[str, float]]:
    """The plain loop's figures per format: documents, mean MB, mean seconds, seconds per MB
    (what cost.SECONDS_PER_MB is set from)."""
    out: dict[str, dict[str, float]] = {}
    for path, seconds, _ in files:
        fmt = cost.suffix_format(path)
        entry = out.setdefault(fmt, {"docs": 0, "mb": 0.0, "s": 0.0})
        entry["docs"] += 1
        entry["mb"] += Path(path).stat().st_size / cost.MB
        entry["s"] += seconds
    return {
        fmt: {
            "docs": e["docs"],
            "mean_mb": round(e["mb"] / e["docs"], 4),
            "mean_s": round(e["s"] / e["docs"], 3),
            "s_per_mb": round(max(e["s"] - cost.SECONDS_PER_DOC * e["docs"], 0) / e["mb"], 2),
        }
        for fmt, e in sorted(out.items())
    }


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


def round1(assets: list, compute: ComputeResource) -> tuple[float, dict]:
    """Round 1 of ours on a fresh store: register the corpus, then the timed docs/converted."""
    materialize(assets, ["docs/source"], compute)
    return materialize(assets, [CONVERTED], compute)


def setup(work: Path, docs: int, profile: str, **settings: object):
    """The benchmark's pipeline in ``work``: settings (weight-free embeddings), the generated
    corpus's paths and a local ComputeResource (shared with documents_profile.py)."""
    config = Settings(
        corpus_dir=work / "corpus",
        store_root=work / "store",
        embedding=EmbeddingConfig(model="hashing"),
        **settings,
    )
    paths = corpus.generate(config.corpus_dir, docs, broken=False, profile=profile)
    return config, paths, ComputeResource(base_dir=str(work / "runs"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--changed", type=int, default=20)
    parser.add_argument("--profile", choices=corpus.PROFILES, default="report")
    parser.add_argument("--round1-pairs", type=int, default=ROUND1_PAIRS)
    args = parser.parse_args()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="dhpc-bench-docs-"))
    try:
        settings, paths, compute = setup(work, args.docs, args.profile)
        everything = [a.key.to_user_string() for a in build_assets(settings)]
        source = "docs/source"

        corpus_mb = sum(p.stat().st_size for p in paths) / cost.MB
        # round 1 in pairs (the plain loop and ours back to back, in alternating order, each of
        # ours on a fresh store): the machine's own drift moves both alike within a pair
        pairs = []
        for i in range(args.round1_pairs):
            store = work / f"store-{i}"
            settings = replace(settings, store_root=store)
            assets = build_assets(settings)
            ours_first = i % 2 == 1
            if ours_first:
                r1_wall, r1 = round1(assets, compute)
            loop_all, loop_files = plain_loop(paths, work)
            if not ours_first:
                r1_wall, r1 = round1(assets, compute)
            pairs.append(
                {
                    "order": "ours, loop" if ours_first else "loop, ours",
                    "ours_s": round(r1_wall, 2),
                    "loop_s": round(loop_all["wall_s"], 2),
                    "ratio": round(loop_all["wall_s"] / r1_wall, 3),
                    "load_1min": round(os.getloadavg()[0], 2),
                    "details": (r1_wall, r1, loop_all, loop_files),
                }
            )
        middle = sorted(pairs, key=lambda p: p["ratio"])[len(pairs) // 2]
        r1_wall, r1, loop_all, loop_files = middle["details"]
        # rounds 2 and 3 go on from the last pair's store
        materialize(assets, everything[2:], compute)  # chunks + embeddings: round 3 sees no work

        changed = list(range(0, args.docs, max(1, args.docs // args.changed)))[: args.changed]
        changed_paths = corpus.edit_documents(settings.corpus_dir, changed, profile=args.profile)
        materialize(assets, [source], compute)
        r2_wall, r2 = materialize(assets, [CONVERTED], compute)
        loop_changed, _ = plain_loop(changed_paths, work)
        materialize(assets, everything[2:], compute)

        r3_wall, r3 = materialize(assets, everything, compute)
        assert all(md["computed"] == 0 for md in r3.values()), r3

        ours_r1 = r1[CONVERTED]
        ours_r2 = r2[CONVERTED]
        routes = ("where", "rule", "estimated_s", "threshold", "ray_fixed_s", "workers")
        result = {
            "docs": args.docs,
            "profile": args.profile,
            "corpus_mb": round(corpus_mb, 2),
            "cpus": os.cpu_count(),
            "round1_docs_per_s_ours": round(args.docs / r1_wall, 2),
            "round1_docs_per_s_loop": round(args.docs / loop_all["wall_s"], 2),
            # the median pair's ratio (its figures are the round1_* below); every pair follows
            "round1_ours_vs_loop_throughput": round(loop_all["wall_s"] / r1_wall, 2),
            "round1_pairs": [{k: v for k, v in p.items() if k != "details"} for p in pairs],
            "round1_ours_s": round(r1_wall, 2),
            "round1_ours_path": ours_r1["path"],
            "round1_route": {k: ours_r1.get(f"route/{k}") for k in routes},
            "round1_ray": {
                k: ours_r1.get(f"ray/{k}")
                for k in (
                    "actors",
                    "batches",
                    "job_s",
                    "driver_start_s",
                    "init_s",
                    "convert_s",
                    "fixed_s",
                )
            },
            "round1_docling_s_ours": ours_r1.get("convert_cpu_s"),
            "round1_loop": {k: round(v, 2) for k, v in loop_all.items()},
            "round1_loop_per_format": per_format(loop_files),
            "round2_docs_changed": len(changed_paths),
            "round2_docs_converted": ours_r2["computed"],
            "round2_ours_s": round(r2_wall, 2),
            "round2_ours_path": ours_r2["path"],
            "round2_route": {k: ours_r2.get(f"route/{k}") for k in routes},
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
