"""Slurm-mode overhead on the test cluster, in one run, alternating:

(a) floor: bare ``sbatch --parsable --wrap true`` + ``squeue`` polling until the job is done,
    over one warm SSH connection (what any client must at least pay);
(a') payload floor: ``sbatch`` of the very same trivial payload with the same interpreter (its
    Python start, the dagster_pipes import, its messages file) + the same fast ``squeue`` poll,
    over one warm connection: what any client running this payload must at least pay;
(b) ours: a trivial Pipes asset in slurm mode (``compute.run(...)`` inside ``dg.materialize``);
(c) dagster-slurm 1.22.0 in slurm mode (separate venv benchmarks/.peer-venv, pre-deployed env,
    as anchors.md describes), where it can run.

Also ours with a payload that sleeps a few seconds (round trips must not grow with the job's
duration). Then 8 trivial assets in one run with the multiprocess executor, ours (the default
configuration: asyncssh through the machine's connection holder; and OpenSSHTransport; logins
counted on the sshd with a key of our own) and the peer's (its
ssh/scp processes counted through a PATH shim). Writes benchmarks/results/slurm_overhead.json.

    uv run python benchmarks/slurm_overhead.py [N]
"""

import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    encode_param,
)

from dagster_hpc.backends import slurm as slurm_backend
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.compute import ComputeResource
from dagster_hpc.transport import ssh as ssh_transport
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.base import Transport
from dagster_hpc.transport.holder_client import shutdown_all
from dagster_hpc.transport.openssh import OpenSSHTransport

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the assets' and jobs' builders live in tests/integration
from tests.integration.slurm_support import multiprocess_job, payload_assets  # noqa: E402

PAYLOAD = HERE / "payloads" / "trivial.py"
SLEEPY_PAYLOAD = HERE / "payloads" / "sleepy.py"
N_SLEEPY = 3  # rounds of the sleeping payload (its round trips, not its time, are the point)
# Two durations, both inside the watch's first window (WATCH_WINDOW_MIN_S, 10 s): the same round
# trips for both say a job's duration does not add reads; past the window a silent job pays one
# read per window (10 s, doubling to 30 s; tests/unit/test_reader_idle.py).
SLEEP_DURATIONS_S = (3, 9)
_sleep_s = {"s": 3.0}
FLOOR_DIR = "~/.dagster-hpc-bench/floor"
RESULT = HERE / "results" / "slurm_overhead.json"
PEER_PYTHON = HERE / ".peer-venv" / "bin" / "python"
PEER_SCRIPT = HERE / "_peer_slurm.py"
CONFDIR = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", "/var/tmp/dagster-hpc-cluster"))
AUTHORIZED_KEYS = Path("/home/hpcuser/.ssh/authorized_keys")
DEFAULT_N = 16
WARMUP = 1  # the first round pays the SSH login and the per-process preflight
# Floor polling: as fast as a client reasonably asks (one squeue per 0.1 s over one connection).
FLOOR_POLL_S = 0.1
FLOOR_TIMEOUT_S = 120
# Slurm starts a job at submit time only when no job of ours ended a moment ago (measured here:
# back-to-back `sbatch --wrap true` take 0.3 s, then 0.9-1.9 s). Each measurement starts after
# this pause, so all three clients meet the same idle scheduler.
SETTLE_S = 3.0
# slurmctld here starts a pending job in a pass of its main loop, once a second, unless it
# starts it at submit time. A fixed pause after the previous client's end locks each client to
# its own phase of that second (measured: ours, which always followed the payload floor, waited
# ~0.85 s in nearly every round while the bare floor often started at once). Each pause adds a
# random part in [0, SCHED_PHASE_S) so every client meets the same uniform phase; the seed is in
# the JSON.
SCHED_PHASE_S = 1.0
SEED = int(os.environ.get("DHPC_BENCH_SEED", "20261203"))
_rng = random.Random(SEED)


def _settle() -> None:
    time.sleep(SETTLE_S + _rng.uniform(0.0, SCHED_PHASE_S))


# The peer costs ~9 s per asset and ~160 ssh processes for 8: bound it.
PEER_TIMEOUT_S = 900
N_EIGHT = 8
# The peer runs in the first rounds only (~9 s each, its spread is small); floor and ours, whose
# spread is Slurm's scheduling latency, in every round.
PEER_ROUNDS = 6

# --- round-trip accounting for ours: every Transport round trip in this process --------------
_rt = {"n": 0}
_orig_count = Transport._count


def _counting(self, roundtrips: int = 1, sent: int = 0) -> None:
    _rt["n"] += roundtrips
    _orig_count(self, roundtrips, sent)


Transport._count = _counting  # benchmark instrumentation only (ours and the floors alike)
_before_queued: list[int] = []
_orig_submit = slurm_backend.SlurmBackend.submit


def _submit(self, local_run_dir: str, remote_run_dir: str):
    handle = _orig_submit(self, local_run_dir, remote_run_dir)
    _before_queued.append(_rt["n"] - _run_start["rt"])
    return handle


slurm_backend.SlurmBackend.submit = _submit
_run_start = {"rt": 0}
_client: list[float] = []


def _env_sh() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (CONFDIR / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                env[k] = v
    return env


CLUSTER = _env_sh()
KNOWN_HOSTS = str(CONFDIR / "client" / "known_hosts")


def _ours_env(
    key: str, transport: str = "asyncssh", control_dir: str | None = None
) -> dict[str, str]:
    env = {
        "DAGSTER_HPC_SSH_HOST": "127.0.0.1",
        "DAGSTER_HPC_SSH_PORT": CLUSTER["SLURM_TEST_SSH_PORT"],
        "DAGSTER_HPC_SSH_USER": CLUSTER["SLURM_TEST_USER"],
        "DAGSTER_HPC_SSH_KEY_PATH": key,
        "DAGSTER_HPC_SSH_USE_AGENT": "0",
        "DAGSTER_HPC_SSH_KNOWN_HOSTS": KNOWN_HOSTS,
        "DAGSTER_HPC_SSH_TRANSPORT": transport,
        "DAGSTER_HPC_SLURM_PYTHON": CLUSTER["SLURM_TEST_PAYLOAD_PYTHON"],
        "DAGSTER_HPC_SLURM_REMOTE_BASE_DIR": "~/.dagster-hpc-bench/runs",
        "DAGSTER_HPC_SLURM_CLUSTER_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        "DAGSTER_HPC_SLURM_TIME_LIMIT": "5",
        "DAGSTER_HPC_SLURM_MEM": "256M",
    }
    if control_dir:
        env["DAGSTER_HPC_SSH_CONTROL_DIR"] = control_dir
    return env


def _target(key: str) -> SSHTarget:
    return SSHTarget(
        host="127.0.0.1",
        port=int(CLUSTER["SLURM_TEST_SSH_PORT"]),
        user=CLUSTER["SLURM_TEST_USER"],
        key_paths=(key,),
        known_hosts=KNOWN_HOSTS,
        use_agent=False,
    )


# --- (a) the floor ----------------------------------------------------------------------------
def floor_once(t: ssh_transport.SSHTransport) -> tuple[float, int]:
    rt0 = t.roundtrips
    started = time.perf_counter()
    job = t.check(
        "sbatch --parsable --job-name=dhpc-bench-floor --output=/dev/null --time=5 --mem=256M --wrap true"
    ).strip()
    deadline = time.monotonic() + FLOOR_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        res = t.run(f"squeue --noheader --states=all --jobs {job} --format=%T")
        state = res.stdout.strip()
        if res.ok and state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(FLOOR_POLL_S)
    if state != "COMPLETED":
        raise RuntimeError(
            f"floor job {job} ended {state or 'unseen'} (squeue: {res.stderr.strip()})"
        )
    return time.perf_counter() - started, t.roundtrips - rt0


# --- (a') the payload floor -------------------------------------------------------------------
def payload_floor_setup(t: ssh_transport.SSHTransport) -> tuple[str, str]:
    """Ship the trivial payload once; returns (its path on the cluster, the interpreter)."""
    home = t.check("echo $HOME").strip()
    remote_dir = FLOOR_DIR.replace("~", home, 1)
    t.check(f"mkdir -p {remote_dir} && chmod 700 {remote_dir}")
    t.put_file(PAYLOAD, f"{remote_dir}/trivial.py")
    return f"{remote_dir}/trivial.py", CLUSTER["SLURM_TEST_PAYLOAD_PYTHON"]


def _pipes_env(messages_path: str) -> str:
    """The Pipes bootstrap variables the payload needs (context inline, messages to a file)."""
    context = {
        "asset_keys": ["trivial_floor"],
        "code_version_by_asset_key": {"trivial_floor": None},
        "provenance_by_asset_key": {"trivial_floor": None},
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": "payload-floor",
        "job_name": None,
        "retry_number": 0,
        "extras": {},
    }
    return (
        f"{DAGSTER_PIPES_CONTEXT_ENV_VAR}={encode_param({'data': context})},"
        f"{DAGSTER_PIPES_MESSAGES_ENV_VAR}={encode_param({'path': messages_path})}"
    )


def payload_floor_once(
    t: ssh_transport.SSHTransport, payload: str, python: str
) -> tuple[float, int]:
    messages = f"{payload.rsplit('/', 1)[0]}/messages-{uuid.uuid4().hex[:8]}.jsonl"
    rt0 = t.roundtrips
    started = time.perf_counter()
    job = t.check(
        "sbatch --parsable --job-name=dhpc-bench-pfloor --output=/dev/null --time=5 --mem=256M "
        f"--export=ALL,{_pipes_env(messages)} --wrap {shlex.quote(f'{python} {payload}')}"
    ).strip()
    state = _poll_until_done(t, job)
    elapsed, rts = time.perf_counter() - started, t.roundtrips - rt0
    if state != "COMPLETED" or "report_asset_materialization" not in t.check(f"cat {messages}"):
        raise RuntimeError(f"payload floor job {job} ended {state or 'unseen'} without its message")
    t.check(f"rm -f {messages}")
    return elapsed, rts


def _poll_until_done(t: ssh_transport.SSHTransport, job: str) -> str:
    deadline = time.monotonic() + FLOOR_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        res = t.run(f"squeue --noheader --states=all --jobs {job} --format=%T")
        state = res.stdout.strip()
        if res.ok and state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(FLOOR_POLL_S)
    return state


# --- (b) ours ---------------------------------------------------------------------------------
@dg.asset
def trivial_slurm(context: dg.AssetExecutionContext, compute: ComputeResource):
    _run_start["rt"] = _rt["n"]
    started = time.perf_counter()
    results = list(compute.run(context, PAYLOAD).get_results())
    _client.append(time.perf_counter() - started)
    yield from results


@dg.asset
def sleepy_slurm(context: dg.AssetExecutionContext, compute: ComputeResource):
    _run_start["rt"] = _rt["n"]
    started = time.perf_counter()
    results = list(
        compute.run(context, SLEEPY_PAYLOAD, extras={"sleep_s": _sleep_s["s"]}).get_results()
    )
    _client.append(time.perf_counter() - started)
    yield from results


def ours_once(
    resource: ComputeResource,
    instance: dg.DagsterInstance,
    asset: dg.AssetsDefinition = trivial_slurm,
) -> tuple[float, float, int]:
    rt0 = _rt["n"]
    started = time.perf_counter()
    result = dg.materialize([asset], resources={"compute": resource}, instance=instance)
    wall = time.perf_counter() - started
    assert result.success
    return _client[-1], wall, _rt["n"] - rt0


# --- 8 assets, multiprocess (each step its own process; settings from the environment) --------
EIGHT = payload_assets("bench_mp", N_EIGHT, PAYLOAD)


def eight_job() -> dg.JobDefinition:
    return multiprocess_job("bench_eight", EIGHT, max_concurrent=N_EIGHT)


class _DedicatedKey:
    """A key of our own in authorized_keys, so logins are counted for this benchmark only."""

    def __init__(self, directory: Path):
        self.path = directory / "id_bench"
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "dagster-hpc-bench",
                "-f",
                str(self.path),
            ],
            check=True,
        )
        self.pub = (directory / "id_bench.pub").read_text().strip()
        self.fp = subprocess.run(
            ["ssh-keygen", "-lf", f"{self.path}.pub"], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        with AUTHORIZED_KEYS.open("a") as fh:
            fh.write(self.pub + "\n")

    def logins(self) -> int:
        log = CONFDIR / "log" / "sshd-main.log"
        return sum(
            1
            for line in log.read_text(errors="replace").splitlines()
            if self.fp in line and "Accepted publickey" in line
        )

    def remove(self) -> None:
        st = AUTHORIZED_KEYS.stat()
        lines = AUTHORIZED_KEYS.read_text().splitlines()
        tmp = AUTHORIZED_KEYS.with_name(f".authorized_keys.{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in lines if line.strip() != self.pub))
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, 0o600)
        os.replace(tmp, AUTHORIZED_KEYS)


def ours_eight(transport: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="dh-b-") as tmp:
        key = _DedicatedKey(Path(tmp))
        control_dir = str(Path(tmp) / "cm") if transport == "openssh" else None
        saved = dict(os.environ)
        os.environ.update(_ours_env(str(key.path), transport, control_dir))
        try:
            (Path(tmp) / "dagster").mkdir()
            with dg.instance_for_test(temp_dir=str(Path(tmp) / "dagster")) as instance:
                started = time.perf_counter()
                with dg.execute_job(dg.reconstructable(eight_job), instance=instance) as result:
                    wall = time.perf_counter() - started
                    assert result.success
            return {"wall_s": round(wall, 2), "logins": key.logins()}
        finally:
            if control_dir:
                OpenSSHTransport(_target(str(key.path)), control_dir=control_dir).close_master()
            os.environ.clear()
            os.environ.update(saved)
            key.remove()


# --- (c) the peer -----------------------------------------------------------------------------
def _peer_env(shim: Path, log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{shim}:{env['PATH']}",
            "PEER_SSH_LOG": str(log),
            "PEER_HOST": "127.0.0.1",
            "PEER_PORT": CLUSTER["SLURM_TEST_SSH_PORT"],
            "PEER_USER": CLUSTER["SLURM_TEST_USER"],
            "PEER_KEY": CLUSTER["SLURM_TEST_SSH_KEY"],
            "PEER_KNOWN_HOSTS": KNOWN_HOSTS,
            "PEER_REMOTE_BASE": "/home/hpcuser/.dagster-hpc-bench/peer-runs",
            "PEER_ENV": "/home/hpcuser/.dagster-hpc-bench/peer-env",
        }
    )
    return env


def _peer_setup(t: ssh_transport.SSHTransport, shim: Path) -> None:
    """The pre-deployed env the peer needs (activate.sh + env/bin/python with dagster-pipes)
    and a PATH shim that counts the peer's ssh/scp processes."""
    venv = str(Path(CLUSTER["SLURM_TEST_PAYLOAD_PYTHON"]).parents[1])
    t.check(
        'P=$HOME/.dagster-hpc-bench/peer-env && mkdir -p "$P" && ln -sfn '
        f'{venv} "$P/env" && printf \'export PATH=%s/env/bin:$PATH\\n\' "$P" > "$P/activate.sh"'
    )
    shim.mkdir(parents=True, exist_ok=True)
    for binary in ("ssh", "scp"):
        real = shutil.which(binary) or f"/usr/bin/{binary}"
        path = shim / binary
        path.write_text(f'#!/bin/sh\necho {binary} >> "$PEER_SSH_LOG"\nexec {real} "$@"\n')
        path.chmod(0o755)


def peer_run(args: list[str], shim: Path, log: Path) -> tuple[dict | None, int, str]:
    before = len(log.read_text().splitlines()) if log.exists() else 0
    proc = subprocess.run(
        [str(PEER_PYTHON), str(PEER_SCRIPT), *args, str(PAYLOAD)],
        env=_peer_env(shim, log),
        capture_output=True,
        text=True,
        timeout=PEER_TIMEOUT_S,
    )
    spawned = (len(log.read_text().splitlines()) if log.exists() else 0) - before
    if proc.returncode != 0:
        return None, spawned, f"failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), spawned, "ok"


def main(n: int) -> dict:
    floor_t = ssh_transport.SSHTransport(_target(CLUSTER["SLURM_TEST_SSH_KEY"]), share=False)
    floor_t.check("true")  # warm: the login is not part of the floor
    floor_payload, floor_python = payload_floor_setup(floor_t)
    ours_res = ComputeResource(mode="slurm", slurm=SlurmResource.from_env())
    instance = dg.DagsterInstance.ephemeral()
    peer_ok = PEER_PYTHON.exists()
    work = Path(tempfile.mkdtemp(prefix="dh-peer-"))
    shim, peer_log = work / "shim", work / "ssh.log"
    if peer_ok:
        _peer_setup(floor_t, shim)
    floor, floor_rt, ours, ours_wall, ours_rt, peer, peer_spawn = [], [], [], [], [], [], []
    pfloor, pfloor_rt, loads = [], [], []
    peer_status = "ok" if peer_ok else f"not run: {PEER_PYTHON} missing (see {PEER_SCRIPT.name})"
    for i in range(n):  # alternate, so load changes on the shared machine hit all three alike
        _settle()
        f, frt = floor_once(floor_t)
        _settle()
        pf, pfrt = payload_floor_once(floor_t, floor_payload, floor_python)
        _settle()
        c, w, rt = ours_once(ours_res, instance)
        loads.append(os.getloadavg()[0])
        if i >= WARMUP:
            pfloor.append(pf)
            pfloor_rt.append(pfrt)
            floor.append(f)
            floor_rt.append(frt)
            ours.append(c)
            ours_wall.append(w)
            ours_rt.append(rt)
        if peer_ok and peer_status == "ok" and i <= PEER_ROUNDS:
            _settle()
            data, spawned, peer_status = peer_run(["single", "1"], shim, peer_log)
            if data and i >= WARMUP:
                peer.extend(data["client"])
                peer_spawn.append(spawned)
        print(
            f"round {i}: floor {f:.2f} s, payload floor {pf:.2f} s, ours {c:.2f} s ({rt} round trips), "
            f"peer {peer[-1] if peer else '-'}, load {loads[-1]:.1f}",
            flush=True,
        )
    sleepy: dict[int, tuple[list[int], list[float]]] = {}
    for duration in SLEEP_DURATIONS_S:
        _sleep_s["s"] = duration
        sleepy[duration] = ([], [])
        for _ in range(N_SLEEPY):
            _settle()
            c, _w, rt = ours_once(ours_res, instance, sleepy_slurm)
            sleepy[duration][0].append(rt)
            sleepy[duration][1].append(c)
            print(f"payload sleeping {duration} s: ours {c:.2f} s ({rt} round trips)", flush=True)
    out: dict = {
        "n": len(floor),
        "peer_n": len(peer),
        "floor_median_s": round(statistics.median(floor), 3),
        "floor_roundtrips_per_job": statistics.median(floor_rt),
        "ours_median_s": round(statistics.median(ours), 3),
        "ours_materialize_median_s": round(statistics.median(ours_wall), 3),
        "ours_roundtrips_per_job": statistics.median(ours_rt),
        "ours_roundtrips_before_queued_max": max(_before_queued),
        "ours_vs_floor": round(statistics.median(ours) / statistics.median(floor), 3),
        "payload_floor_median_s": round(statistics.median(pfloor), 3),
        "payload_floor_roundtrips_per_job": statistics.median(pfloor_rt),
        "ours_vs_payload_floor": round(statistics.median(ours) / statistics.median(pfloor), 3),
        # Paired per round (the same scheduler state for both, give or take one tick): the
        # medians above move with how often Slurm starts a job at submit time.
        "ours_minus_floor_paired_median_s": round(
            statistics.median(c - f for c, f in zip(ours, floor, strict=True)), 3
        ),
        "ours_minus_payload_floor_paired_median_s": round(
            statistics.median(c - f for c, f in zip(ours, pfloor, strict=True)), 3
        ),
        **{
            key: value
            for d, (rts, secs) in sleepy.items()
            for key, value in (
                (f"ours_sleep{d}_median_s", round(statistics.median(secs), 3)),
                (f"ours_sleep{d}_roundtrips_per_job", statistics.median(rts)),
            )
        },
        "load_avg_1min_per_round": [round(x, 1) for x in loads],
        "peer_status": peer_status,
    }
    if peer:
        out.update(
            {
                "peer_median_s": round(statistics.median(peer), 3),
                "peer_ssh_processes_per_job": statistics.median(peer_spawn),
                "ours_vs_peer": round(statistics.median(ours) / statistics.median(peer), 3),
            }
        )
    for label, transport in (("default", "asyncssh"), ("openssh", "openssh")):
        figures = ours_eight(transport)
        out[f"ours_8_assets_{label}_s"] = figures["wall_s"]
        out[f"ours_8_assets_{label}_logins"] = figures["logins"]
        print(f"8 assets ours ({label}): {figures}", flush=True)
    out["ours_8_assets_s"] = out["ours_8_assets_default_s"]
    if peer_ok and peer_status == "ok":
        data, spawned, status = peer_run(["eight"], shim, peer_log)
        if data and data.get("success"):
            out["peer_8_assets_s"] = round(data["wall"], 2)
            out["peer_8_assets_ssh_processes"] = spawned
        else:
            out["peer_8_assets_status"] = status
        print(
            f"8 assets peer: {out.get('peer_8_assets_s')} s, {spawned} ssh/scp processes",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    floor_t.check("scancel --me --name=dhpc-bench-floor || true")  # ours only, none should remain
    floor_t.check(f"rm -rf {FLOOR_DIR.replace('~', '$HOME', 1)}")
    floor_t.close()
    out.update(
        {
            "floor_poll_s": FLOOR_POLL_S,
            "settle_between_measurements_s": SETTLE_S,
            "settle_random_extra_max_s": SCHED_PHASE_S,
            "seed": SEED,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at end",
            "load_avg_at_start": LOAD_AT_START,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N
    LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
    os.environ.update(_ours_env(CLUSTER["SLURM_TEST_SSH_KEY"]))
    holders = tempfile.mkdtemp(prefix="dhb-")  # this benchmark's own connection holders
    os.environ["DAGSTER_HPC_HOLDER_DIR"] = holders
    try:
        result = main(n)
    finally:
        shutdown_all(Path(holders))
        shutil.rmtree(holders, ignore_errors=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
