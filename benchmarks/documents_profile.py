"""CPU seconds by role of round 1's Ray path (ours) beside a plain Docling loop: where the cores go.

    ENV=$(bash scripts/docs-env.sh)
    PYTHONPATH=src:examples $ENV/bin/python benchmarks/documents_profile.py [--docs 60]
        [--skip-loop] [--out FILE]

Round 1 of docs/converted on a fresh store, forced onto Ray (``in_process_max_docs=0``), while
a sampler reads ``/proc`` every ``SAMPLE_INTERVAL_S`` for every descendant of this process: each
process's CPU seconds (user + system, its last sample) summed by role (the converter actors,
Ray Data's own actors, the sink's writers, idle workers, Ray's daemons and agents, the payload's
driver, this Dagster process). CPU seconds do not depend on the machine's load the way walls
do, so this is the figure to compare cuts with on a shared machine; the walls printed beside
them are indicative only (benchmarks/documents.py, under /work/team/bench, is the wall figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import documents as bench  # noqa: E402
from docs_pipeline import corpus  # noqa: E402
from docs_pipeline.assets import build_assets  # noqa: E402
from docs_pipeline.features import CONVERTED  # noqa: E402

# How often the sampler reads /proc: a process that ends loses at most this much of its CPU.
SAMPLE_INTERVAL_S = 0.2
TICKS = os.sysconf("SC_CLK_TCK")
# Role of a process from its command line (Ray workers retitle themselves `ray::<what>`); the
# first match wins, a worker keeps the most specific role it was ever seen with.
WORKER_ROLES = (
    ("converter actors", ("MapWorker", "ConvertActor", "EmbedActor")),
    ("sink writer", ("Write",)),
    ("ray data internal actors", ("_StatsActor", "AutoscalingCoordinator", "ActorLocationTracker")),
    ("ray agents (dashboard agent, runtime env agent)", ("DashboardAgent", "RuntimeEnvAgent")),
    ("idle workers", ("ray::IDLE",)),
)
# Processes that are not Ray workers: by their executable or script (the first words).
DAEMON_ROLES = (
    ("ray daemons (gcs, raylet, dashboard head)", ("gcs_server", "raylet", "dashboard")),
    ("ray monitors (log monitor, autoscaler monitor)", ("log_monitor", "monitor.py")),
    ("payload driver", ("ray_payload.py",)),
    ("idle workers", ("default_worker.py",)),
)
GENERIC = ("idle workers", "ray (other ray:: titles)", "other")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _role(cmdline: str) -> str:
    if cmdline.startswith("ray::"):
        for role, needles in WORKER_ROLES:
            if any(n in cmdline for n in needles):
                return role
        return "ray (other ray:: titles)"
    head = " ".join(cmdline.split()[:3])
    for role, needles in DAEMON_ROLES:
        if any(n in head for n in needles):
            return role
    return "other"


class Sampler(threading.Thread):
    """Every descendant of ``root``: its last CPU seconds and its most specific role."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root = root
        self.cpu: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.titles: dict[int, str] = {}
        # (seconds since start, cpu seconds, title) each time a process's title changes
        self.changes: dict[int, list[tuple[float, float, str]]] = {}
        self.t0 = time.monotonic()
        self.threads: dict[int, int] = {}  # converter actors: most threads seen
        self.threads_env: dict[int, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        tree = _children()
        todo, seen = list(tree.get(self.root, [])), []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(tree.get(pid, []))
        for pid in seen:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            self.cpu[pid] = (int(stat[11]) + int(stat[12])) / TICKS
            title = cmd.split("  ")[0].strip()[:90]
            history = self.changes.setdefault(pid, [])
            if not history or history[-1][2] != title:
                history.append((round(time.monotonic() - self.t0, 2), self.cpu[pid], title))
            role = _role(cmd)
            if role == "converter actors" and pid not in self.threads_env:
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    omp = [e.decode() for e in environ if e.startswith(b"OMP_NUM_THREADS=")]
                    self.threads_env[pid] = omp[0] if omp else "OMP_NUM_THREADS unset"
                except OSError:
                    pass
            if role == "converter actors":
                threads = int(stat[17])
                self.threads[pid] = max(self.threads.get(pid, 0), threads)
            if pid not in self.roles or self.roles[pid] in GENERIC:
                self.roles[pid] = role
                self.titles[pid] = cmd[:200]

    def stop(self) -> dict[str, dict[str, float]]:
        self._done.set()
        self.join()
        out: dict[str, dict[str, float]] = {}
        for pid, seconds in self.cpu.items():
            entry = out.setdefault(self.roles[pid], {"processes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] += seconds
        return {k: {**v, "cpu_s": round(v["cpu_s"], 2)} for k, v in sorted(out.items())}

    def timeline(self) -> list[str]:
        """Title changes of every process but the idle ones, in time order."""
        rows = [
            (t, pid, cpu, title)
            for pid, history in self.changes.items()
            for t, cpu, title in history
        ]
        return [f"{t:6.2f}s {pid} cpu={cpu:.2f} {title}" for t, pid, cpu, title in sorted(rows)]

    def processes(self) -> list[str]:
        return [
            f"{pid} {self.cpu[pid]:7.2f} {self.roles[pid]}: {self.titles[pid]}"
            for pid in sorted(self.cpu, key=lambda p: -self.cpu[p])
        ]


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--profile", choices=corpus.PROFILES, default="report")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dhpc-prof-docs-"))
    try:
        settings, paths, compute = bench.setup(work, args.docs, args.profile, in_process_max_docs=0)
        assets = build_assets(replace(settings))
        bench.materialize(assets, ["docs/source"], compute)
        sampler = Sampler(os.getpid())
        sampler.start()
        dagster_cpu = _self_cpu()
        started = time.perf_counter()
        _, metadata = bench.materialize(assets, [CONVERTED], compute)
        wall = time.perf_counter() - started
        dagster_cpu = _self_cpu() - dagster_cpu
        roles = sampler.stop()
        md = metadata[CONVERTED]
        result = {
            "docs": args.docs,
            "load_1min": round(os.getloadavg()[0], 2),
            "ours_wall_s": round(wall, 2),
            "ours_path": md.get("path"),
            "ours_docling_s": md.get("convert_cpu_s"),
            "ours_ray": {k: v for k, v in md.items() if str(k).startswith("ray/")},
            "ours_cpu_s_by_role": roles,
            "ours_cpu_s_dagster_process": round(dagster_cpu, 2),
            "ours_cpu_s_total": round(sum(r["cpu_s"] for r in roles.values()) + dagster_cpu, 2),
            "ours_processes": sampler.processes(),
            "ours_timeline": sampler.timeline(),
            "ours_actor_threads": {str(p): n for p, n in sampler.threads.items()},
            "ours_actor_omp": sorted(set(sampler.threads_env.values())),
        }
        if not args.skip_loop:
            loop, _ = bench.plain_loop(paths, work)
            result["loop_wall_s"] = round(loop["wall_s"], 2)
            result["loop_s"] = round(loop["loop_s"], 2)
            result["loop_cores"] = round(loop["loop_cores"], 2)
            result["loop_cpu_s"] = round(loop["loop_cores"] * loop["loop_s"], 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
