"""Local-mode overhead: a trivial Pipes asset through our local mode vs Dagster's own
PipesSubprocessClient, alternating in one run; dagster-slurm 1.22's local mode as a third column
when its separate venv (benchmarks/.peer-venv) exists.

Two timings per materialization: the client call inside the asset (``run(...).get_results()``:
what each library adds) and the whole ``dg.materialize`` (what a user waits for).
Writes benchmarks/results/local_overhead.json.

    uv run python benchmarks/local_overhead.py [N]
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from dagster_hpc import ComputeResource

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payloads" / "trivial.py"
RESULT = HERE / "results" / "local_overhead.json"
PEER_PYTHON = HERE / ".peer-venv" / "bin" / "python"
PEER_SCRIPT = HERE / "_peer_local.py"
DEFAULT_N = 30
WARMUP = 2  # first runs pay imports and cold caches in both clients
# The peer costs ~6 s per asset: fewer repetitions keep the run short on a shared machine.
PEER_N = 8
# The peer needs minutes on a busy machine (~6 s per asset measured); bound it anyway.
PEER_TIMEOUT_S = 1800

_client_times: list[float] = []


@dg.asset
def trivial_ours(context: dg.AssetExecutionContext, compute: ComputeResource):
    started = time.perf_counter()
    results = list(compute.run(context, PAYLOAD).get_results())
    _client_times.append(time.perf_counter() - started)
    yield from results


@dg.asset
def trivial_subprocess(
    context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient
):
    started = time.perf_counter()
    results = list(
        pipes_subprocess_client.run(
            context=context, command=[sys.executable, str(PAYLOAD)]
        ).get_results()
    )
    _client_times.append(time.perf_counter() - started)
    yield from results


def _one(
    asset: dg.AssetsDefinition, resources: dict, instance: dg.DagsterInstance
) -> tuple[float, float]:
    started = time.perf_counter()
    result = dg.materialize([asset], resources=resources, instance=instance)
    wall = time.perf_counter() - started
    assert result.success and result.asset_materializations_for_node(asset.key.path[-1])
    return _client_times.pop(), wall


def measure(n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("ours", "ours_wall", "sub", "sub_wall")}
    with tempfile.TemporaryDirectory() as base:
        ours = {"compute": ComputeResource(base_dir=base)}
        sub = {"pipes_subprocess_client": dg.PipesSubprocessClient()}
        instance = dg.DagsterInstance.ephemeral()
        for i in range(WARMUP + n):
            o = _one(trivial_ours, ours, instance)
            s = _one(trivial_subprocess, sub, instance)
            if i >= WARMUP:
                times["ours"].append(o[0])
                times["ours_wall"].append(o[1])
                times["sub"].append(s[0])
                times["sub_wall"].append(s[1])
    return times


def measure_peer(n: int) -> dict:
    if not PEER_PYTHON.exists():
        return {
            "peer_status": f"not run: {PEER_PYTHON} missing (create it: see {PEER_SCRIPT.name})"
        }
    with tempfile.TemporaryDirectory() as pixi_root:
        env = {**os.environ, "PIXI_PROJECT_ROOT": pixi_root, "PYTHONPATH": ""}
        proc = subprocess.run(
            [str(PEER_PYTHON), str(PEER_SCRIPT), str(n + WARMUP), str(PAYLOAD)],
            capture_output=True,
            text=True,
            env=env,
            timeout=PEER_TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0:
        return {"peer_status": f"failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "peer_status": "ok",
        "peer_version": data["version"],
        "peer_n": n,
        "peer_median_s": statistics.median(data["client"][WARMUP:]),
        "peer_materialize_median_s": statistics.median(data["wall"][WARMUP:]),
    }


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N
    times = measure(n)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n": n,
        "ours_median_s": round(med["ours"], 4),
        "dagster_subprocess_median_s": round(med["sub"], 4),
        "ratio": round(med["ours"] / med["sub"], 3),
        # each ours/subprocess pair ran back to back: robust against the shared machine's load drift
        "paired_ratio_median": round(
            statistics.median(o / s for o, s in zip(times["ours"], times["sub"], strict=True)), 3
        ),
        # the fastest run of each: the least disturbed by other users of the machine
        "ours_min_s": round(min(times["ours"]), 4),
        "dagster_subprocess_min_s": round(min(times["sub"]), 4),
        "ours_materialize_median_s": round(med["ours_wall"], 4),
        "dagster_subprocess_materialize_median_s": round(med["sub_wall"], 4),
        "materialize_ratio": round(med["ours_wall"] / med["sub_wall"], 3),
        "what": "median seconds of the client call inside a trivial Pipes asset (ratio) and of the whole dg.materialize",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "dagster": dg.__version__,
    }
    peer = measure_peer(min(n, PEER_N))
    result.update({k: round(v, 4) if isinstance(v, float) else v for k, v in peer.items()})
    if "peer_median_s" in result:
        result["peer_vs_ours"] = round(result["peer_median_s"] / result["ours_median_s"], 1)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
