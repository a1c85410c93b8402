"""Median latency of one trivial remote command (`true`) on a warm connection, four ways, in one run:

- ``sshtransport``: our asyncssh transport (one connection, one channel per command)
- ``opensshtransport``: our OpenSSH transport (an ``ssh`` process per command over a ControlMaster)
- ``plain_controlmaster``: a bare ``ssh -o ControlPath=...`` process per command (what the peer does)
- ``fresh_ssh``: a new ``ssh`` login per command (no multiplexing), for scale

The ways alternate inside each round so that load from other processes hits all of them alike.
Needs the test cluster (cluster/up.sh). Writes benchmarks/results/ssh_roundtrip.json.

    uv run python benchmarks/ssh_roundtrip.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.openssh import OpenSSHTransport
from dagster_hpc.transport.ssh import SSHTransport

CONFDIR = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", "/var/tmp/dagster-hpc-cluster"))
OUT = Path(__file__).parent / "results" / "ssh_roundtrip.json"
FRESH_EVERY = 10  # a fresh login per command is slow and loads sshd: sample it every 10th round


def _env() -> dict[str, str]:
    env = {}
    for line in (CONFDIR / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                env[k] = v
    return env


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_s": statistics.median(xs), "p90_s": xs[int(0.9 * (len(xs) - 1))], "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    env = _env()
    key, kh, port, user = (
        env["SLURM_TEST_SSH_KEY"],
        str(CONFDIR / "client" / "known_hosts"),
        int(env["SLURM_TEST_SSH_PORT"]),
        env["SLURM_TEST_USER"],
    )
    target = SSHTarget(
        "127.0.0.1", port=port, user=user, key_paths=(key,), known_hosts=kh, use_agent=False
    )
    cdir = tempfile.mkdtemp(prefix="dhb-", dir="/tmp")
    try:
        ours = SSHTransport(target, share=False)
        openssh = OpenSSHTransport(target, control_dir=cdir, control_persist="120")
        cm = os.path.join(cdir, "plain-cm")
        base = ["ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-p", str(port), "-l", user]  # fmt: skip
        plain = [
            *base,
            "-o",
            f"ControlPath={cm}",
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=120",
            "127.0.0.1",
            "true",
        ]
        fresh = [*base, "-o", "ControlPath=none", "127.0.0.1", "true"]

        def run(argv: list[str]) -> subprocess.CompletedProcess:
            return subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)

        # warm up every way once (connection, master, sockets) outside the measurement
        ours.run("true"), openssh.run("true"), run(plain)
        times: dict[str, list[float]] = {
            "sshtransport": [],
            "opensshtransport": [],
            "plain_controlmaster": [],
            "fresh_ssh": [],
        }
        for i in range(args.rounds):
            times["sshtransport"].append(_timed(lambda: ours.run("true")))
            times["opensshtransport"].append(_timed(lambda: openssh.run("true")))
            times["plain_controlmaster"].append(_timed(lambda: run(plain)))
            if i % FRESH_EVERY == 0:
                times["fresh_ssh"].append(_timed(lambda: run(fresh)))
        result = {name: _summary(xs) for name, xs in times.items()}
        result["ratio_vs_controlmaster"] = (
            result["sshtransport"]["median_s"] / result["plain_controlmaster"]["median_s"]
        )
        result["sshtransport_authentications"] = ours.authentications
        result["sshtransport_roundtrips"] = ours.roundtrips
        result["machine"] = {
            "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        }
        result["rounds"] = args.rounds
        ours.close()
        openssh.close_master()
        subprocess.run(
            ["ssh", "-o", f"ControlPath={cm}", "-O", "exit", "127.0.0.1"],
            capture_output=True,
            check=False,
        )
    finally:
        shutil.rmtree(cdir, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("sshtransport", "opensshtransport", "plain_controlmaster", "fresh_ssh"):
        print(
            f"{name:20s} median {result[name]['median_s'] * 1000:7.2f} ms  p90 {result[name]['p90_s'] * 1000:7.2f} ms  (n={result[name]['n']})"
        )
    print(f"ratio_vs_controlmaster {result['ratio_vs_controlmaster']:.3f}  -> {OUT}")


if __name__ == "__main__":
    main()
