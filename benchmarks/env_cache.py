"""Env cache on the test cluster: the example payload env (examples/payload-env/uv.lock).

Cold: empty local bundle cache AND empty remote cache: probe (cached) + build + upload +
unpack/install + verify. Warm: a new process's view (the per-process memo dropped): one lookup.
Bytes are the SSHTransport's own upload counter; round trips its command counter.

    uv run python benchmarks/env_cache.py [--confdir /var/tmp/dagster-hpc-cluster] [--warm-runs 5]

Writes benchmarks/results/env_cache.json. Top-level figures are for the default bundle kind
(self-contained); ``kinds`` has both kinds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from dagster_hpc.envs.build import EnvSpec, plan
from dagster_hpc.envs.platform import compute_node_platform
from dagster_hpc.envs.ship import EnvShipper, forget_verified
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "examples" / "payload-env" / "uv.lock"
RESULTS = ROOT / "benchmarks" / "results" / "env_cache.json"


def _env(confdir: Path) -> dict[str, str]:
    out = {}
    for line in (confdir / "env.sh").read_text().splitlines():
        for part in line.removeprefix("export ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                out[k] = v
    return out


def measure(t: SSHTransport, kind: str, platform, warm_runs: int) -> dict[str, object]:
    base = f"~/.dagster-hpc-bench/envs-{uuid.uuid4().hex[:8]}"  # the remote side expands ~
    with tempfile.TemporaryDirectory(prefix="dhpc-bench-bundles-") as cache:
        try:
            forget_verified()
            p = plan(EnvSpec(LOCK, kind=kind), platform)
            b0, r0, t0 = t.bytes_sent, t.roundtrips, time.perf_counter()
            cold = EnvShipper(t, base, cluster="bench", cache_dir=Path(cache)).ensure(p)
            cold_s = time.perf_counter() - t0
            cold_bytes, cold_rt = t.bytes_sent - b0, t.roundtrips - r0
            archive = next((Path(cache) / "bundles").glob(f"{p.key}.tar*"))
            bundle_bytes = archive.stat().st_size
            warm_s, warm_bytes, warm_rt = [], [], []
            for _ in range(warm_runs):
                forget_verified()  # what a fresh Dagster step process sees
                b1, r1, t1 = t.bytes_sent, t.roundtrips, time.perf_counter()
                warm = EnvShipper(t, base, cluster="bench", cache_dir=Path(cache)).ensure(p)
                warm_s.append(time.perf_counter() - t1)
                warm_bytes.append(t.bytes_sent - b1)
                warm_rt.append(t.roundtrips - r1)
                assert warm.status == "hit", warm
            size_kb = int(t.check(f"du -sk {shlex.quote(cold.ref.path)}").split()[0])
        finally:
            forget_verified()
            t.run(f'rm -rf "$HOME"/{shlex.quote(base[2:])}')
    return {
        "kind": kind,
        "key": p.key,
        "cold_s": round(cold_s, 3),
        "cold_build_s": round(cold.build_s, 3),
        "cold_ship_s": round(cold_s - cold.build_s, 3),
        "cold_bytes_uploaded": cold_bytes,
        "cold_roundtrips": cold_rt,
        "warm_s": round(statistics.median(warm_s), 4),
        "warm_s_all": [round(x, 4) for x in warm_s],
        "warm_bytes_uploaded": max(warm_bytes),
        "warm_roundtrips": max(warm_rt),
        "bundle_bytes": bundle_bytes,
        "bundle_file": archive.name,
        "installed_bytes_on_cluster": size_kb * 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--confdir", default="/var/tmp/dagster-hpc-cluster")
    ap.add_argument("--warm-runs", type=int, default=5)
    ap.add_argument("--kinds", default="self-contained,wheelhouse")
    args = ap.parse_args()
    env = _env(Path(args.confdir))
    user = env["SLURM_TEST_USER"]
    t = SSHTransport(
        SSHTarget(
            host="127.0.0.1",
            port=int(env["SLURM_TEST_SSH_PORT"]),
            user=user,
            key_paths=(env["SLURM_TEST_SSH_KEY"],),
            known_hosts=str(Path(args.confdir) / "client" / "known_hosts"),
            use_agent=False,
        )
    )
    with tempfile.TemporaryDirectory(prefix="dhpc-bench-platform-") as pcache:
        p0 = time.perf_counter()
        platform = compute_node_platform(
            t, f"{user}@127.0.0.1", cache_dir=Path(pcache), refresh=True
        )
        probe_s = time.perf_counter() - p0
    kinds = {k: measure(t, k, platform, args.warm_runs) for k in args.kinds.split(",")}
    main_kind = kinds.get("self-contained") or next(iter(kinds.values()))
    result = {
        "what": "example payload env (dagster-pipes + polars) on the local test cluster over SSHTransport",
        "cold_s": main_kind["cold_s"],
        "warm_s": main_kind["warm_s"],
        "cold_bytes_uploaded": main_kind["cold_bytes_uploaded"],
        "warm_bytes_uploaded": main_kind["warm_bytes_uploaded"],
        "bundle_bytes": main_kind["bundle_bytes"],
        "warm_roundtrips": main_kind["warm_roundtrips"],
        "target_ok": main_kind["warm_bytes_uploaded"] == 0 and main_kind["cold_s"] < 120,
        "platform_probe_s": round(probe_s, 3),
        "platform": {"arch": platform.arch, "glibc": platform.glibc, "python": platform.python},
        "kinds": kinds,
        "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    t.close()


if __name__ == "__main__":
    main()
