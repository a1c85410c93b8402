"""The concurrent executor vs Dagster's own executors, in one run (issue 17).

N trivial Pipes assets (no dependencies between them) in ONE Dagster run, for N = 8 and 32, in
local mode and in slurm mode (the test cluster), under:

- ``hpc_executor`` (ours: every step on a thread of one process),
- Dagster's multiprocess executor (``max_concurrent=N``: each step its own process),
- Dagster's in-process executor (one process, steps one after another).

Walls are ``dg.execute_job`` from call to result. Every slurm-mode run logs in with a key of its
own (added to the test user's authorized_keys for that run), so the sshd log tells how many
logins that run made; each run also gets its own cluster label (own poll cache). Ours and the
one-asset run are repeated (median); the peers run once per configuration (they take tens of
seconds to minutes, and their spread is small against the ratios). Writes
benchmarks/results/executor.json.

    uv run python benchmarks/executor.py [REPEATS] [--resume]

``--resume`` keeps what an interrupted invocation measured (a temp file) and measures the rest.
"""

import contextlib
import fcntl
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.executor import hpc_executor

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payloads" / "trivial.py"
RESULT = HERE / "results" / "executor.json"
PARTIAL = Path(tempfile.gettempdir()) / "dagster-hpc-bench-executor.partial.json"
CONFDIR = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", "/var/tmp/dagster-hpc-cluster"))
AUTHORIZED_KEYS = Path("/home/hpcuser/.ssh/authorized_keys")
# the lock the integration tests take to edit authorized_keys (tests/integration/conftest.py)
AUTHORIZED_KEYS_LOCK = Path("/tmp/dagster-hpc-authorized-keys.lock")
SIZES = (8, 32)
DEFAULT_REPEATS = 3
# Between measurements: Slurm starts a job at submit time only when no job of ours ended a
# moment ago (see slurm_overhead.py); every run meets the same idle scheduler.
SETTLE_S = 3.0
REMOTE_BASE = "~/.dagster-hpc-bench/executor-runs"


# --- the jobs (module level: the multiprocess executor's children rebuild them) -------------
@dg.resource
def compute_from_env(_) -> ComputeResource:
    """Built at run start from the environment the benchmark set for this run."""
    if os.environ.get("DAGSTER_HPC_MODE") == "slurm":
        return ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    return ComputeResource(mode="local", base_dir=os.environ["BENCH_LOCAL_BASE"])


def _asset(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"trivial_{i}", required_resource_keys={"compute"})
    def _trivial(context: dg.AssetExecutionContext):
        yield from context.resources.compute.run(context, PAYLOAD).get_results()

    return _trivial


def _job(n: int, executor: str) -> dg.JobDefinition:
    assets = [_asset(i) for i in range(n)]
    executor_def = {
        "ours": hpc_executor,
        "multiprocess": dg.multiprocess_executor.configured({"max_concurrent": n}),
        "in_process": dg.in_process_executor,
    }[executor]
    name = f"bench_{executor}_{n}"
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets))],
        resources={"compute": compute_from_env},
        executor=executor_def,
    )
    return defs.resolve_job_def(name)


# one module-level function per job: Dagster caches a reconstructed job by its function
def ours_1() -> dg.JobDefinition:
    return _job(1, "ours")


def ours_8() -> dg.JobDefinition:
    return _job(8, "ours")


def ours_32() -> dg.JobDefinition:
    return _job(32, "ours")


def multiprocess_8() -> dg.JobDefinition:
    return _job(8, "multiprocess")


def multiprocess_32() -> dg.JobDefinition:
    return _job(32, "multiprocess")


def in_process_8() -> dg.JobDefinition:
    return _job(8, "in_process")


def in_process_32() -> dg.JobDefinition:
    return _job(32, "in_process")


JOBS = {
    ("ours", 1): ours_1,
    ("ours", 8): ours_8,
    ("ours", 32): ours_32,
    ("multiprocess", 8): multiprocess_8,
    ("multiprocess", 32): multiprocess_32,
    ("in_process", 8): in_process_8,
    ("in_process", 32): in_process_32,
}


# --- logins: a key of our own per run --------------------------------------------------------
def _cluster_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (CONFDIR / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                env[k] = v
    return env


CLUSTER = _cluster_env()


@contextlib.contextmanager
def _keys_locked() -> Iterator[None]:
    with AUTHORIZED_KEYS_LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def dedicated_key(directory: Path) -> Iterator[tuple[Path, str]]:
    """(key path, fingerprint) of a fresh key authorized for the test user during the block."""
    path = directory / "id_bench"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dhpc-bench-exec", "-f", str(path)],
        check=True,
    )
    pub = (directory / "id_bench.pub").read_text().strip()
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    with _keys_locked(), AUTHORIZED_KEYS.open("a") as fh:
        fh.write(pub + "\n")
    try:
        yield path, fingerprint
    finally:
        with _keys_locked():
            st = AUTHORIZED_KEYS.stat()
            lines = AUTHORIZED_KEYS.read_text().splitlines()
            tmp = AUTHORIZED_KEYS.with_name(f".authorized_keys.{os.getpid()}")
            tmp.write_text("".join(line + "\n" for line in lines if line.strip() != pub))
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, 0o600)
            os.replace(tmp, AUTHORIZED_KEYS)


def logins(fingerprint: str) -> int:
    log = CONFDIR / "log" / "sshd-main.log"
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if fingerprint in line and "Accepted publickey" in line
    )


def slurm_env(key: Path) -> dict[str, str]:
    return {
        "DAGSTER_HPC_MODE": "slurm",
        "DAGSTER_HPC_SSH_HOST": "127.0.0.1",
        "DAGSTER_HPC_SSH_PORT": CLUSTER["SLURM_TEST_SSH_PORT"],
        "DAGSTER_HPC_SSH_USER": CLUSTER["SLURM_TEST_USER"],
        "DAGSTER_HPC_SSH_KEY_PATH": str(key),
        "DAGSTER_HPC_SSH_USE_AGENT": "0",
        "DAGSTER_HPC_SSH_KNOWN_HOSTS": str(CONFDIR / "client" / "known_hosts"),
        "DAGSTER_HPC_SLURM_PYTHON": CLUSTER["SLURM_TEST_PAYLOAD_PYTHON"],
        "DAGSTER_HPC_SLURM_REMOTE_BASE_DIR": REMOTE_BASE,
        "DAGSTER_HPC_SLURM_CLUSTER_NAME": f"bench-exec-{uuid.uuid4().hex[:8]}",
        "DAGSTER_HPC_SLURM_TIME_LIMIT": "5",
        "DAGSTER_HPC_SLURM_MEM": "256M",
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- one measured run ------------------------------------------------------------------------
def run_once(executor: str, n: int, mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="dh-bx-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        with contextlib.ExitStack() as stack:
            if mode == "slurm":
                key, fingerprint = stack.enter_context(dedicated_key(work))
                stack.enter_context(environment(slurm_env(key)))
            else:
                fingerprint = ""
                env = {"DAGSTER_HPC_MODE": "local", "BENCH_LOCAL_BASE": str(work / "runs")}
                stack.enter_context(environment(env))
            with dg.instance_for_test(temp_dir=str(work / "home")) as instance:
                started = time.perf_counter()
                with dg.execute_job(
                    dg.reconstructable(JOBS[(executor, n)]), instance=instance
                ) as result:
                    wall = time.perf_counter() - started
                    if not result.success:
                        raise RuntimeError(f"{executor} {n} {mode}: the run failed")
                    materialized = sum(
                        1
                        for e in result.all_events
                        if e.event_type_value == "ASSET_MATERIALIZATION"
                    )
            if materialized != n:
                raise RuntimeError(f"{executor} {n} {mode}: {materialized} materializations")
            out = {"wall_s": round(wall, 3)}
            if mode == "slurm":
                out["logins"] = logins(fingerprint)
            return out


def measure(executor: str, n: int, mode: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        time.sleep(SETTLE_S)
        runs.append(run_once(executor, n, mode))
        print(f"{mode:5} {executor:12} {n:2}: {runs[-1]}", flush=True)
    walls = [r["wall_s"] for r in runs]
    out = {"wall_s": round(statistics.median(walls), 3), "walls_s": walls}
    if mode == "slurm":
        out["logins_per_run"] = max(r["logins"] for r in runs)
    return out


def _plan(repeats: int) -> list[tuple[str, str, int, str, int]]:
    """(result key, executor, n, mode, repeats), the ratios' inputs first (8 assets)."""
    plan = [("slurm_ours_1", "ours", 1, "slurm", repeats)]
    for n in SIZES:
        for mode in ("local", "slurm"):
            plan.append((f"{mode}_ours_{n}", "ours", n, mode, repeats))
            for peer in ("in_process", "multiprocess"):
                plan.append((f"{mode}_{peer}_{n}", peer, n, mode, 1))
    return plan


def main(repeats: int, resume: bool = False) -> dict:
    """``resume``: keep the measurements of an interrupted invocation (PARTIAL), measure the rest."""
    load_start = os.getloadavg()[0]
    figures: dict[str, dict] = json.loads(PARTIAL.read_text()) if resume else {}
    resumed = []
    for key, executor, n, mode, times in _plan(repeats):
        if key in figures:
            continue
        resumed.append(key)
        figures[key] = measure(executor, n, mode, times)
        PARTIAL.write_text(json.dumps(figures, indent=2) + "\n")  # a late failure loses nothing

    def wall(key: str) -> float:
        return figures[key]["wall_s"]

    out: dict = {
        "runs": figures,
        "slurm_8_vs_multiprocess": round(wall("slurm_ours_8") / wall("slurm_multiprocess_8"), 3),
        "slurm_8_vs_one_asset": round(wall("slurm_ours_8") / wall("slurm_ours_1"), 3),
        "local_8_vs_inprocess": round(wall("local_ours_8") / wall("local_in_process_8"), 3),
        "slurm_32_vs_multiprocess": round(wall("slurm_ours_32") / wall("slurm_multiprocess_32"), 3),
        "local_32_vs_inprocess": round(wall("local_ours_32") / wall("local_in_process_32"), 3),
        "logins_per_run_ours_slurm": max(
            figures[k]["logins_per_run"] for k in ("slurm_ours_1", "slurm_ours_8", "slurm_ours_32")
        ),
        "targets": {
            "slurm_8_vs_multiprocess": "<= 0.2",
            "slurm_8_vs_one_asset": "<= 2.5",
            "logins_per_run_ours_slurm": "== 1",
            "local_8_vs_inprocess": "<= 1.0",
        },
        "repeats_ours": repeats,
        "repeats_peers": 1,
        "what": "seconds of dg.execute_job for N trivial Pipes assets in one run; median for ours",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "dagster": dg.__version__,
        "measured_after_resume": resumed if resume else [],
        "load_average_start": round(load_start, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--resume"]
    result = main(int(args[0]) if args else DEFAULT_REPEATS, resume="--resume" in sys.argv)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
