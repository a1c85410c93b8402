"""Incremental resolve: ours vs metaxy 0.1.11 (its Delta store) vs a plain polars floor.

    uv run python benchmarks/incremental.py [--sizes 100000 1000000] [--reps 3]

Same generated data for all three: a root feature with 3 fields (file_uri, value, category) and
one downstream feature (result <- value; value_bucket <- value, category). Measured: resolving
the DOWNSTREAM feature (load upstream data versions, hash, compare with stored) in three
states: first resolve (nothing stored downstream), 1% of root values changed, no change.

Every measurement runs in a fresh subprocess (clean peak RSS: ru_maxrss of that process, which
includes the interpreter and imports), against a store prepared beforehand by another
subprocess; the systems take turns, and the reported figure is the median over ``--reps`` runs.

metaxy lives in its own venv (never in the project lock):
    python3 -m venv benchmarks/.metaxy-venv
    benchmarks/.metaxy-venv/bin/pip install 'metaxy[delta]==0.1.11'

Ours and the floor run in the engine's own runtime environment when it exists (what a compute
node has: polars, polars-hash, pyarrow, deltalake; this repo's src on PYTHONPATH), not in the
project's dev venv, whose extra packages (pandas, via ray[data]) pyarrow imports on first use:
    uv venv --python 3.11 benchmarks/.engine-venv
    VIRTUAL_ENV=benchmarks/.engine-venv uv pip install polars==2.1.0 polars-hash==0.9.3 \
        pyarrow==26.0.1 deltalake==1.6.6

Writes benchmarks/results/incremental.json (one full run took 170 s on a quiet 2-core machine).
A run too long for one sitting can be split into sections, one invocation each, merged into
the same file: ``--workloads identity``, then ``--workloads expansion --merge``, ...; the
JSON's ``sections`` lists every invocation with its load average and duration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import incremental_lineage as lineage

HERE = Path(__file__).resolve().parent
METAXY_PYTHON = HERE / ".metaxy-venv" / "bin" / "python"
ENGINE_PYTHON = HERE / ".engine-venv" / "bin" / "python"
SRC = HERE.parent / "src"
RESULTS = HERE / "results" / "incremental.json"
SYSTEMS = ("ours", "metaxy", "floor")
SCENARIOS = ("first", "changed_1pct", "no_change")
# A measured child that takes longer than this is hung, not slow (metaxy needs ~5 s at 1M).
CHILD_TIMEOUT_S = 600
CHANGED_EVERY = 100  # every 100th sample's value changes: 1%

# Data ----------------------------------------------------------------------------------------


def root_rows(n: int, changed: bool):
    """Deterministic root samples; ``changed`` shifts the value of every 100th sample."""
    import polars as pl

    i = pl.int_range(n, eager=True).alias("i")
    df = pl.DataFrame(i).select(
        pl.format("s{}", pl.col("i")).alias("sample_uid"),
        pl.format("s3://bucket/sample-{}.bin", pl.col("i")).alias("file_uri"),
        ((pl.col("i") * 7919 % 1000) / 10.0).alias("value"),
        pl.format("c{}", pl.col("i") % 10).alias("category"),
        pl.col("i"),
    )
    if changed:
        df = df.with_columns(
            pl.when(pl.col("i") % CHANGED_EVERY == 0)
            .then(pl.col("value") + 0.5)
            .otherwise(pl.col("value"))
            .alias("value")
        )
    return df.drop("i")


def provenance_struct(df, name: str):
    import polars as pl

    return df.with_columns(
        pl.struct(pl.col("file_uri"), pl.col("value").cast(pl.String), pl.col("category")).alias(
            name
        )
    )


# Ours ----------------------------------------------------------------------------------------


def ours_graph():
    from dagster_hpc.incremental import FeatureGraph, FeatureSpec, FieldDep, FieldSpec

    raw = FeatureSpec(
        key="bench/raw",
        id_columns=("sample_uid",),
        fields=(FieldSpec("file_uri"), FieldSpec("value"), FieldSpec("category")),
    )
    derived = FeatureSpec(
        key="bench/derived",
        id_columns=("sample_uid",),
        deps=("bench/raw",),
        fields=(
            FieldSpec("result", deps=(FieldDep("bench/raw", ("value",)),)),
            FieldSpec("value_bucket", deps=(FieldDep("bench/raw", ("value", "category")),)),
        ),
    )
    return FeatureGraph([raw, derived]), raw, derived


def ours_setup(root: Path, n: int, scenario: str) -> None:
    from dagster_hpc.incremental import DeltaStore

    graph, raw, derived = ours_graph()
    store = DeltaStore(root, graph)
    samples = provenance_struct(root_rows(n, False), "provenance_by_field")
    store.write(raw, store.resolve_update(raw, samples=samples).to_process())
    if scenario == "first":
        return
    store.write(derived, store.resolve_update(derived).to_process())
    if scenario == "changed_1pct":
        samples = provenance_struct(root_rows(n, True), "provenance_by_field")
        store.write(raw, store.resolve_update(raw, samples=samples).to_process())


def ours_prepare(root: Path) -> Callable[[], dict[str, int]]:
    from dagster_hpc.incremental import DeltaStore

    graph, _, derived = ours_graph()
    store = DeltaStore(root, graph)

    def measure() -> dict[str, int]:
        counts = store.resolve_update(derived).counts()
        counts.pop("failed")  # the peers have no such state; always 0 here
        return counts

    return measure


# metaxy --------------------------------------------------------------------------------------


def metaxy_features():
    import metaxy as mx

    class Raw(
        mx.BaseFeature,
        spec=mx.FeatureSpec(
            key="bench/raw", id_columns=["sample_uid"], fields=["file_uri", "value", "category"]
        ),
    ):
        sample_uid: str

    class Derived(
        mx.BaseFeature,
        spec=mx.FeatureSpec(
            key="bench/derived",
            id_columns=["sample_uid"],
            deps=[mx.FeatureDep(feature=Raw)],
            fields=[
                mx.FieldSpec(key="result", deps=[mx.FieldDep(feature=Raw, fields=["value"])]),
                mx.FieldSpec(
                    key="value_bucket",
                    deps=[mx.FieldDep(feature=Raw, fields=["value", "category"])],
                ),
            ],
        ),
    ):
        sample_uid: str

    return Raw, Derived


def metaxy_store(root: Path):
    from metaxy.ext.polars.handlers.delta import DeltaMetadataStore

    return DeltaMetadataStore(root_path=str(root))


def metaxy_setup(root: Path, n: int, scenario: str) -> None:
    raw, derived = metaxy_features()
    store = metaxy_store(root)
    with store.open("w"):
        samples = provenance_struct(root_rows(n, False), "metaxy_provenance_by_field")
        store.write(raw, store.resolve_update(raw, samples=samples).new.to_native())
        if scenario == "first":
            return
        store.write(derived, store.resolve_update(derived).new.to_native())
        if scenario == "changed_1pct":
            samples = provenance_struct(root_rows(n, True), "metaxy_provenance_by_field")
            store.write(raw, store.resolve_update(raw, samples=samples).stale.to_native())


def metaxy_prepare(root: Path) -> Callable[[], dict[str, int]]:
    _, derived = metaxy_features()
    store = metaxy_store(root)

    def measure() -> dict[str, int]:
        with store.open("r"):
            inc = store.resolve_update(derived)
            return {"new": len(inc.new), "stale": len(inc.stale), "orphaned": len(inc.orphaned)}

    return measure


# Floor: plain polars, one native hash per sample, one join ---------------------------------


def floor_setup(root: Path, n: int, scenario: str) -> None:
    import polars as pl

    rows = root_rows(n, False)
    rows.write_delta(root / "raw")
    if scenario == "first":
        pl.DataFrame(schema={"sample_uid": pl.String, "h": pl.Int64}).write_delta(root / "derived")
        return
    hashed = rows.select("sample_uid", floor_hash())
    hashed.write_delta(root / "derived")
    if scenario == "changed_1pct":
        root_rows(n, True).write_delta(root / "raw", mode="overwrite")


def floor_hash():
    import polars as pl

    parts = [pl.col("value").cast(pl.String), pl.col("category")]
    return pl.concat_str(parts, separator="|").hash(seed=0).reinterpret(signed=True).alias("h")


def floor_prepare(root: Path) -> Callable[[], dict[str, int]]:
    import polars as pl

    def measure() -> dict[str, int]:
        """The same three frames as an increment (new, stale, orphaned), from one join."""
        expected = pl.scan_delta(str(root / "raw")).select("sample_uid", floor_hash())
        stored = pl.scan_delta(str(root / "derived")).select(
            "sample_uid", pl.col("h").alias("h_old")
        )
        joined = expected.join(stored, on="sample_uid", how="full", coalesce=True).collect()
        new = joined.filter(pl.col("h_old").is_null() & pl.col("h").is_not_null())
        stale = joined.filter(pl.col("h").is_not_null() & (pl.col("h") != pl.col("h_old")))
        orphaned = joined.filter(pl.col("h").is_null())
        return {"new": new.height, "stale": stale.height, "orphaned": orphaned.height}

    return measure


# Child entry point ---------------------------------------------------------------------------

SETUP = {"ours": ours_setup, "metaxy": metaxy_setup, "floor": floor_setup}
# Each returns the measured call; imports, feature definitions and store objects are made before
# the clock starts (a process pays them once, not per resolve).
PREPARE = {"ours": ours_prepare, "metaxy": metaxy_prepare, "floor": floor_prepare}


def child(system: str, action: str, root: Path, n: int, scenario: str, workload: str) -> None:
    if action == "setup":
        if workload == "identity":
            SETUP[system](root, n, scenario)
        else:
            lineage.SETUP[system](workload, root, n, scenario)
        print(json.dumps({"ok": True}))
        return
    if workload == "identity":
        measure = PREPARE[system](root)
    else:
        measure = lineage.PREPARE[system](workload, root)
    cpu_before = _cpu_s()
    start = time.perf_counter()
    counts = measure()
    wall = time.perf_counter() - start
    cpu = _cpu_s() - cpu_before
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_mb, "counts": counts}))


def _cpu_s() -> float:
    """User + system CPU time of this process (all threads): steadier than wall on a busy box."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Parent --------------------------------------------------------------------------------------


def run_child(
    system: str, action: str, root: Path, n: int, scenario: str, workload: str = "identity"
) -> dict:
    python = str(METAXY_PYTHON) if system == "metaxy" else engine_python()
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "child",
        system,
        action,
        str(root),
        str(n),
        scenario,
        workload,
    ]
    env = dict(
        os.environ, POLARS_MAX_THREADS=os.environ.get("POLARS_MAX_THREADS", str(os.cpu_count()))
    )
    if system != "metaxy" and ENGINE_PYTHON.exists():
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(":")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{system} {workload} {action} {scenario} n={n} failed (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def engine_python() -> str:
    return str(ENGINE_PYTHON) if ENGINE_PYTHON.exists() else sys.executable


def expected_counts(n: int, scenario: str) -> dict[str, int]:
    if scenario == "first":
        return {"new": n, "stale": 0, "orphaned": 0}
    if scenario == "changed_1pct":
        return {"new": 0, "stale": len(range(0, n, CHANGED_EVERY)), "orphaned": 0}
    return {"new": 0, "stale": 0, "orphaned": 0}


def bench_lineage(
    workloads: list[str], reps: int, workdir: Path, systems: tuple[str, ...], n_override: int | None
) -> list[dict]:
    """Expansion and aggregation cases, same protocol as ``bench`` (setup, then turns)."""
    cases: list[dict] = []
    for workload in workloads:
        n = n_override or lineage.default_n(workload)
        for scenario in SCENARIOS:
            roots = {system: workdir / f"{system}-{workload}-{scenario}" for system in systems}
            for system, root in roots.items():
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                run_child(system, "setup", root, n, scenario, workload)
            runs: dict[str, list[dict]] = {system: [] for system in systems}
            for _ in range(reps):
                for system in systems:
                    runs[system].append(
                        run_child(system, "measure", roots[system], n, scenario, workload)
                    )
            for system in systems:
                expected = lineage.expected_counts(workload, n, scenario)
                cases.append(_case(system, n, scenario, runs[system], expected, workload))
                shutil.rmtree(roots[system], ignore_errors=True)
    return cases


def lineage_ratios(cases: list[dict]) -> dict:
    """``<workload>_ours_vs_<other>``: the worst scenario of ours / theirs median wall."""
    out: dict = {}
    for workload in lineage.WORKLOADS:
        for other in ("floor", "metaxy"):
            per, per_cpu, mem = {}, {}, {}
            for scenario in SCENARIOS:
                pick = {
                    c["system"]: c
                    for c in cases
                    if c.get("workload") == workload and c["scenario"] == scenario
                }
                if "ours" in pick and other in pick:
                    ours, theirs = pick["ours"], pick[other]
                    per[scenario] = round(ours["wall_median_s"] / theirs["wall_median_s"], 3)
                    per_cpu[scenario] = round(ours["cpu_median_s"] / theirs["cpu_median_s"], 3)
                    mem[scenario] = round(
                        ours["peak_rss_median_mb"] / theirs["peak_rss_median_mb"], 3
                    )
            if per:
                name = f"{workload}_ours_vs_{other}"
                out[name] = max(per.values())
                out[f"{name}_by_scenario"] = per
                out[f"{name}_cpu_by_scenario"] = per_cpu
                if other == "metaxy":
                    out[f"{workload}_ours_vs_metaxy_peak_memory_by_scenario"] = mem
    return out


def bench(sizes: list[int], reps: int, workdir: Path, systems: tuple[str, ...]) -> dict:
    """Per (n, scenario): set up every system, then measure them in turns, ``reps`` rounds.

    Taking turns (ours, metaxy, floor, ours, ...) spreads bursts of load from other processes
    on a shared machine over all systems alike, instead of hitting one system's runs only.
    """
    cases: list[dict] = []
    for n in sizes:
        for scenario in SCENARIOS:
            roots = {system: workdir / f"{system}-{n}-{scenario}" for system in systems}
            for system, root in roots.items():
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                run_child(system, "setup", root, n, scenario)
            runs: dict[str, list[dict]] = {system: [] for system in systems}
            for _ in range(reps):
                for system in systems:
                    runs[system].append(run_child(system, "measure", roots[system], n, scenario))
            for system in systems:
                cases.append(_case(system, n, scenario, runs[system]))
                shutil.rmtree(roots[system], ignore_errors=True)
    return {"cases": cases}


def _case(
    system: str,
    n: int,
    scenario: str,
    runs: list[dict],
    expected: dict | None = None,
    workload: str = "identity",
) -> dict:
    counts = runs[0]["counts"]
    expected = expected or expected_counts(n, scenario)
    if counts != expected:
        raise RuntimeError(f"{system} {workload} {scenario} n={n}: counts {counts} != {expected}")
    case = {
        "workload": workload,
        "system": system,
        "n": n,
        "scenario": scenario,
        "wall_median_s": statistics.median(r["wall_s"] for r in runs),
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_median_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "wall_runs_s": [round(r["wall_s"], 4) for r in runs],
        "counts": counts,
    }
    print(
        f"{workload:<11} n={n:>8} {scenario:<13} {system:<7} wall {case['wall_median_s']:7.3f} s"
        f"  cpu {case['cpu_median_s']:7.3f} s"
        f"  peak {case['peak_rss_median_mb']:7.0f} MB  {counts}",
        flush=True,
    )
    return case


def ratios(cases: list[dict], n: int) -> dict:
    def pick(system: str, scenario: str, key: str) -> float | None:
        for c in cases:
            if (
                c["system"] == system
                and c["n"] == n
                and c["scenario"] == scenario
                and c.get("workload", "identity") == "identity"
            ):
                return c[key]
        return None

    out: dict = {}
    for other, name in (("metaxy", "ours_vs_metaxy"), ("floor", "ours_vs_floor")):
        per = {}
        for scenario in SCENARIOS:
            ours, theirs = (
                pick("ours", scenario, "wall_median_s"),
                pick(other, scenario, "wall_median_s"),
            )
            if ours is not None and theirs:
                per[scenario] = round(ours / theirs, 3)
        if per:
            # The least favourable scenario for us (ratios are ours / theirs: lower is better).
            out[name] = max(per.values())
            out[f"{name}_by_scenario"] = per
    for other, name in (("metaxy", "ours_vs_metaxy_cpu"), ("floor", "ours_vs_floor_cpu")):
        per = {}
        for scenario in SCENARIOS:
            ours, theirs = (
                pick("ours", scenario, "cpu_median_s"),
                pick(other, scenario, "cpu_median_s"),
            )
            if ours is not None and theirs:
                per[scenario] = round(ours / theirs, 3)
        if per:
            out[f"{name}_by_scenario"] = per
    mem = {}
    for scenario in SCENARIOS:
        ours, theirs = (
            pick("ours", scenario, "peak_rss_median_mb"),
            pick("metaxy", scenario, "peak_rss_median_mb"),
        )
        if ours is not None and theirs:
            mem[scenario] = round(ours / theirs, 3)
    if mem:
        out["ours_vs_metaxy_peak_memory_by_scenario"] = mem
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["identity", *lineage.WORKLOADS],
        choices=["identity", *lineage.WORKLOADS],
    )
    parser.add_argument(
        "--lineage-n", type=int, default=None, help="override the lineage sizes (quick runs)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the cases of the other workloads already in --out (a run split into "
        "sections, one invocation each; every section's load average is recorded)",
    )
    args = parser.parse_args()
    systems = tuple(args.systems)
    if "metaxy" in systems and not METAXY_PYTHON.exists():
        raise SystemExit(
            f"metaxy venv not found at {METAXY_PYTHON}; create it (see this file's docstring) "
            "or pass --systems ours floor"
        )
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        result = {"cases": []}
        if "identity" in args.workloads:
            result = bench(args.sizes, args.reps, Path(tmp), systems)
        workloads = [w for w in args.workloads if w != "identity"]
        result["cases"] += bench_lineage(workloads, args.reps, Path(tmp), systems, args.lineage_n)
    section = {
        "workloads": args.workloads,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
    }
    sections = [section]
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        kept = [c for c in previous["cases"] if c.get("workload", "identity") not in args.workloads]
        result["cases"] = kept + result["cases"]
        sections = [
            s for s in previous.get("sections", []) if not set(s["workloads"]) & set(args.workloads)
        ] + sections
    largest = max(args.sizes)
    result.update(ratios(result["cases"], largest))
    result.update(lineage_ratios(result["cases"]))
    result["ratios_at_n"] = largest
    result["lineage_sizes"] = {
        "expansion": f"{args.lineage_n or lineage.PARENTS} parents x {lineage.CHILDREN} children",
        "aggregation": f"{args.lineage_n or lineage.ROWS} rows -> "
        f"{lineage.scale('aggregation', args.lineage_n or lineage.ROWS)[1]} groups",
    }
    result["load_average"] = {
        "before": sections[0]["load_average"]["before"],
        "after": sections[-1]["load_average"]["after"],
    }
    # One entry per invocation: one for a run in one go, one per section for a split run.
    result["sections"] = sections
    result["notes"] = {
        "ours_vs_metaxy": "max over scenarios of ours/metaxy median wall (0.2 = 5x faster)",
        "ours_vs_floor": "max over scenarios of ours/floor median wall",
        "cpu": "user+system CPU seconds of the resolve (all threads); steadier than wall when the machine is shared",
        "peak_rss": "ru_maxrss of the measuring process (interpreter + imports + resolve)",
        "floor": "polars scan_delta + one native concat_str hash per sample + one full join, "
        "materialising new/stale/orphaned frames; no per-field provenance",
        "timing": "the resolve call only; imports and feature/store objects are made before the clock",
        "lineage": "expansion: 100k documents x 10 chunks (1M child rows), the chunk field reads "
        "the text; aggregation: 1M readings -> 10k sensors, the mean reads the value; 1% changed = "
        "every 100th document / every reading of every 100th sensor; counts at the resolve key "
        "(parents / groups) for all three systems (metaxy's aggregation rows per member are "
        "counted as distinct groups)",
        "floor_lineage": "expansion: hash of the text per document + first stored hash per "
        "document (group) + full join; aggregation: hash of (t, value) per reading, wrapping sum "
        "per sensor (group) + full join",
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "polars_max_threads": os.environ.get("POLARS_MAX_THREADS", str(os.cpu_count())),
        "ours_and_floor_python": engine_python(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _, _, system, action, root, n, scenario, workload = sys.argv
        child(system, action, Path(root), int(n), scenario, workload)
    else:
        main()
