"""Allocation modes on the test cluster, in one run (issue 13):

- 20 partitions as 20 runs (one Slurm job each, one after another) vs the same 20 partitions in
  one single-run backfill (one step, one job array);
- 100 partitions as an array (MaxArraySize=40 on the test cluster: 3 sbatch) vs the floor: the
  same 3 bare ``sbatch --array=0-N --wrap true`` submitted in one SSH command, polled until done
  (``--array=0-99`` itself is refused by MaxArraySize=40);
- 8 trivial assets under Dagster's multiprocess executor: one Slurm job per asset vs session
  mode (one allocation), and session mode under the in-process executor;
- the Dagster floor: the same 8 trivial assets as local ``PipesSubprocessClient`` assets under
  the multiprocess executor (what Dagster alone costs; no client can beat it).

Writes benchmarks/results/allocations.json with the figures, the ratios and their targets.

    uv run python benchmarks/allocations.py
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the reconstructable definitions live in tests/integration

from tests.integration import alloc_defs, session_defs  # noqa: E402

RESULT = HERE / "results" / "allocations.json"
TRIVIAL = HERE / "payloads" / "trivial.py"
CONFDIR = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", "/var/tmp/dagster-hpc-cluster"))
# Floor polling: one squeue per 0.1 s over one SSH connection (as a fast client would).
FLOOR_POLL_S = 0.1
FLOOR_TIMEOUT_S = 300
# Slurm starts a job at submit time only when the scheduler is idle: each measurement starts
# after this pause, so every variant meets the same scheduler.
SETTLE_S = 3.0
TARGETS = {
    "array_vs_runs_20": "<= 0.25",
    "array_100_vs_floor": "<= 2",
    "array_100_sbatch": "<= 3",
    "session_8_jobs": "== 1",
    "session_8_vs_dagster_floor": "<= 1.1",
}


def _cluster_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (CONFDIR / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                env[k] = v
    return env


CLUSTER = _cluster_env()
SSH = ["ssh", "-F", CLUSTER["SLURM_TEST_SSH_CONFIG"], "slurm-main"]


def _remote(command: str) -> str:
    return subprocess.run(
        [*SSH, command], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def _set_env(**extra: str) -> None:
    os.environ.update(
        {
            "DAGSTER_HPC_SSH_HOST": "127.0.0.1",
            "DAGSTER_HPC_SSH_PORT": CLUSTER["SLURM_TEST_SSH_PORT"],
            "DAGSTER_HPC_SSH_USER": CLUSTER["SLURM_TEST_USER"],
            "DAGSTER_HPC_SSH_KEY_PATH": CLUSTER["SLURM_TEST_SSH_KEY"],
            "DAGSTER_HPC_SSH_USE_AGENT": "0",
            "DAGSTER_HPC_SSH_KNOWN_HOSTS": str(CONFDIR / "client" / "known_hosts"),
            "DAGSTER_HPC_SLURM_PYTHON": CLUSTER["SLURM_TEST_PAYLOAD_PYTHON"],
            "DAGSTER_HPC_SLURM_REMOTE_BASE_DIR": "~/.dagster-hpc-bench/alloc",
            "DAGSTER_HPC_SLURM_CLUSTER_NAME": f"bench-alloc-{uuid.uuid4().hex[:8]}",
            "DAGSTER_HPC_SLURM_TIME_LIMIT": "5",
            "DAGSTER_HPC_SLURM_MEM": "256M",
            "DAGSTER_HPC_MODE": "slurm",
            **extra,
        }
    )


def _timed(fn) -> tuple[float, object]:
    time.sleep(SETTLE_S)
    t0 = time.monotonic()
    out = fn()
    return round(time.monotonic() - t0, 2), out


# --- arrays ----------------------------------------------------------------------------------
def _partitions_run(n: int, first: int, last: int, instance):
    os.environ["DHPC_PARTITIONS"] = str(n)
    result = dg.execute_job(
        dg.reconstructable(alloc_defs.partitions_job),
        instance=instance,
        tags=alloc_defs.range_tags(f"p{first:03d}", f"p{last:03d}"),
    )
    assert result.success
    return result


def _single_partition_runs(n: int, instance) -> None:
    os.environ["DHPC_PARTITIONS"] = str(n)
    job = dg.reconstructable(alloc_defs.partitions_job)
    for i in range(n):
        result = dg.execute_job(job, instance=instance, tags={"dagster/partition": f"p{i:03d}"})
        assert result.success


def _array_floor(total: int, max_size: int) -> int:
    """Bare sbatch --array chunks (one SSH command), then squeue until none is left."""
    sizes = [min(max_size, total - s) for s in range(0, total, max_size)]
    submit = " && ".join(
        f"sbatch --parsable --array=0-{k - 1} -o /dev/null --wrap true" for k in sizes
    )
    ids = [line.split(";")[0] for line in _remote(submit).split()]
    deadline = time.monotonic() + FLOOR_TIMEOUT_S
    probe = f"squeue --noheader --jobs={','.join(ids)} --format=%i 2>/dev/null | wc -l"
    while time.monotonic() < deadline:
        if _remote(probe).strip() == "0":
            return len(ids)
        time.sleep(FLOOR_POLL_S)
    raise RuntimeError(f"floor arrays {ids} did not finish in {FLOOR_TIMEOUT_S} s")


def _max_array_size() -> int:
    text = _remote("scontrol show config | sed -n 's/^MaxArraySize *= *//p'").strip()
    return int(text) if text.isdigit() else 1001


# --- 8 assets ----------------------------------------------------------------------------------
def _eight(instance, *, session: bool, executor: str = "multiprocess"):
    os.environ.update(
        DHPC_SESSION="1" if session else "0",
        DHPC_EXECUTOR=executor,
        DHPC_SESSION_ASSETS="8",
        DHPC_PAYLOAD=str(TRIVIAL),
        DHPC_SESSION_IDLE="30",
    )
    result = dg.execute_job(dg.reconstructable(session_defs.session_job), instance=instance)
    assert result.success
    return result


def _allocations(result) -> set[str]:
    ids = set()
    for i in range(8):
        md = result.asset_materializations_for_node(f"session_{i}")[0].metadata
        ids.add(str(md["slurm/allocation_id"].value))
    return ids


def _floor_asset(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"floor_{i}")
    def _asset(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        return pipes.run(command=[sys.executable, str(TRIVIAL)], context=context).get_results()

    return _asset


def dagster_floor_job() -> dg.JobDefinition:
    assets = [_floor_asset(i) for i in range(8)]
    defs = dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job(
                "floor_eight",
                selection=dg.AssetSelection.assets(*assets),
                executor_def=dg.multiprocess_executor.configured({"max_concurrent": 8}),
            )
        ],
        resources={"pipes": dg.PipesSubprocessClient()},
    )
    return defs.resolve_job_def("floor_eight")


MEASUREMENTS = (
    "runs_20",
    "array_20",
    "array_100",
    "dagster_floor_8",
    "perjob_8",
    "session_8",
    "session_8_inprocess",
)


def measure(name: str) -> dict:
    """One measurement in THIS process (main() runs each in a fresh one: Dagster caches a
    reconstructed job per process, and each measurement builds its definitions from env)."""
    _set_env()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test(temp_dir=tmp) as instance:
        os.environ["DHPC_ASSET"] = f"bench_parts_{uuid.uuid4().hex[:6]}"
        if name == "runs_20":
            out["s"], _ = _timed(lambda: _single_partition_runs(20, instance))
        elif name == "array_20":
            out["s"], _ = _timed(lambda: _partitions_run(20, 0, 19, instance))
        elif name == "array_100":
            out["s"], res = _timed(lambda: _partitions_run(100, 0, 99, instance))
            md = res.asset_materializations_for_node(os.environ["DHPC_ASSET"])[0].metadata
            out["sbatch"] = md["dagster-hpc/array_sbatch_calls"].value
        elif name == "dagster_floor_8":
            out["s"], _ = _timed(
                lambda: dg.execute_job(dg.reconstructable(dagster_floor_job), instance=instance)
            )
        elif name == "perjob_8":
            out["s"], _ = _timed(lambda: _eight(instance, session=False))
        elif name == "session_8":
            out["s"], res = _timed(lambda: _eight(instance, session=True))
            out["jobs"] = len(_allocations(res))
        elif name == "session_8_inprocess":
            out["s"], res = _timed(lambda: _eight(instance, session=True, executor="in_process"))
            out["jobs"] = len(_allocations(res))
    return out


def _run_measurement(name: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"measurement {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> dict:
    load_start = round(os.getloadavg()[0], 2)
    got = {}
    for name in MEASUREMENTS[:3]:
        got[name] = _run_measurement(name)
        print(name, got[name], file=sys.stderr, flush=True)
    max_size = _max_array_size()
    floor_s, floor_sbatch = _timed(lambda: _array_floor(100, max_size))
    print("array_100_floor", floor_s, file=sys.stderr, flush=True)
    for name in MEASUREMENTS[3:]:
        got[name] = _run_measurement(name)
        print(name, got[name], file=sys.stderr, flush=True)
    f: dict[str, object] = {
        "runs_20_s": got["runs_20"]["s"],
        "array_20_s": got["array_20"]["s"],
        "array_100_s": got["array_100"]["s"],
        "array_100_sbatch": got["array_100"]["sbatch"],
        "array_100_floor_s": floor_s,
        "array_100_floor_sbatch": floor_sbatch,
        "max_array_size": max_size,
        "dagster_floor_8_s": got["dagster_floor_8"]["s"],
        "perjob_8_s": got["perjob_8"]["s"],
        "session_8_s": got["session_8"]["s"],
        "session_8_jobs": got["session_8"]["jobs"],
        "session_8_inprocess_s": got["session_8_inprocess"]["s"],
        "session_8_inprocess_jobs": got["session_8_inprocess"]["jobs"],
    }
    ratios = {
        "array_vs_runs_20": round(f["array_20_s"] / f["runs_20_s"], 3),  # type: ignore[operator]
        "array_100_vs_floor": round(f["array_100_s"] / f["array_100_floor_s"], 3),  # type: ignore[operator]
        "session_8_vs_dagster_floor": round(f["session_8_s"] / f["dagster_floor_8_s"], 3),  # type: ignore[operator]
        "perjob_8_vs_dagster_floor": round(f["perjob_8_s"] / f["dagster_floor_8_s"], 3),  # type: ignore[operator]
    }
    checks = {
        "array_vs_runs_20": ratios["array_vs_runs_20"] <= 0.25,
        "array_100_vs_floor": ratios["array_100_vs_floor"] <= 2,
        "array_100_sbatch": f["array_100_sbatch"] <= 3,  # type: ignore[operator]
        "session_8_jobs": f["session_8_jobs"] == 1,
        "session_8_vs_dagster_floor": ratios["session_8_vs_dagster_floor"] <= 1.1,
    }
    out = {
        **f,
        **ratios,
        "targets": TARGETS,
        "targets_met": checks,
        "notes": {
            "runs_20": "20 runs one after another in one process (in-process "
            "executor, 1 Slurm job each); every measurement runs in a fresh Python process, timed "
            "around execute_job only",
            "array_100_floor": f"bare sbatch --array chunks of MaxArraySize={max_size} "
            "(--array=0-99 is refused there), one SSH command, squeue every 0.1 s until gone",
            "payloads": "arrays: tests/integration/slurm_payloads/partition.py (imports dagster_pipes, "
            "reports metadata); 8 assets: benchmarks/payloads/trivial.py",
            "single_run": "one measurement of each (no repetitions: the machine is shared and each "
            "run costs minutes); read the ratios with the load figures",
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_at_start": load_start,
        "load_at_end": round(os.getloadavg()[0], 2),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    _remote("rm -rf ~/.dagster-hpc-bench/alloc")
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2])))
    else:
        print(json.dumps(main(), indent=2))
