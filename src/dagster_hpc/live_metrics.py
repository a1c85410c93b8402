"""Live resource use of running Slurm jobs: ONE ``sstat`` per interval for the whole machine.

Like the squeue poller (``backends/slurm_poller``), every Dagster step process reads one small
cache file per cluster; whoever finds it older than ``SSTAT_INTERVAL_S`` runs one ``sstat`` for
every job the processes of this machine registered (each registration expires after
``WANTED_TTL_S``, so a dead process stops costing queries), under a file lock. sstat asks the
slurmd of the job's nodes, not slurmctld's database, so it works without accounting too.

Per job, ``LiveMetrics`` turns samples into a compact log line (CPU in percent of one core,
current and peak RSS, GPU use where the site's TRES reports it) and, at the end, the peak and the
time series as ``slurm/live_*`` metadata plus a small PNG plot (``live_plot``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dagster_hpc.backends.slurm_poller import default_cache_dir
from dagster_hpc.errors import TransportError
from dagster_hpc.metrics import METADATA_PREFIX, parse_duration_s, parse_size_mb, parse_tres
from dagster_hpc.transport.base import Transport

# One sample every 10 s: a memory leak or an idle GPU shows within seconds of a person looking,
# and one sstat per 10 s for ALL jobs of the machine is negligible next to the squeue poll.
SSTAT_INTERVAL_S = 10.0
# Jobs shorter than this are never sampled (sacct has their numbers at the end): a trivial asset
# must not pay an extra round trip.
SSTAT_FIRST_AFTER_S = SSTAT_INTERVAL_S
# A job whose process stopped asking for it this long ago is dropped from the shared query.
WANTED_TTL_S = 3 * SSTAT_INTERVAL_S
SSTAT_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = SSTAT_TIMEOUT_S + 5.0
# The time series in the metadata keeps at most this many points (older ones are thinned out):
# about an hour at full resolution, a long job's shape after that.
MAX_SERIES_POINTS = 360
SSTAT_FORMAT = "JobID,MaxRSS,NTasks,TRESUsageInTot"
_SLUG_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def sstat_command(job_ids: list[str]) -> str:
    jobs = ",".join(job_ids)
    return f"sstat --parsable2 --noheader --allsteps --jobs {shlex.quote(jobs)} --format={SSTAT_FORMAT}"


@dataclass(frozen=True)
class Usage:
    """One job's usage at one moment, summed over its running steps."""

    cpu_s: float  # CPU seconds used so far (all tasks)
    rss_mb: float  # resident memory now
    max_rss_mb: float  # largest task peak so far
    tasks: int
    gpu_util_pct: float | None = None
    gpu_mem_mb: float | None = None


def parse_sstat_usage(text: str) -> dict[str, Usage]:
    """{job id: Usage} from ``sstat_command`` output (rows per step: "361.batch", "361.0")."""
    acc: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[0]:
            continue
        step_id, max_rss, ntasks, tres_text = parts
        job = step_id.split(".", 1)[0]
        tres = parse_tres(tres_text)
        a = acc.setdefault(
            job, {"cpu": 0.0, "rss": 0.0, "max": 0.0, "tasks": 0, "gu": None, "gm": None}
        )
        a["cpu"] += parse_duration_s(tres.get("cpu", "")) or 0.0
        a["rss"] += parse_size_mb(tres.get("mem", "")) or 0.0
        a["max"] = max(a["max"], parse_size_mb(max_rss) or 0.0)
        a["tasks"] += int(ntasks) if ntasks.isdigit() else 0
        if "gres/gpuutil" in tres:
            a["gu"] = (a["gu"] or 0.0) + float(tres["gres/gpuutil"] or 0)
        if "gres/gpumem" in tres:
            a["gm"] = (a["gm"] or 0.0) + (parse_size_mb(tres["gres/gpumem"]) or 0.0)
    return {
        job: Usage(a["cpu"], a["rss"], a["max"], a["tasks"], a["gu"], a["gm"])
        for job, a in acc.items()
    }


class SstatSampler:
    """Per-process view of the machine-wide shared sstat cache for one cluster."""

    def __init__(
        self,
        transport: Transport,
        cluster: str,
        *,
        cache_dir: Path | None = None,
        interval_s: float = SSTAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ):
        self._transport, self._clock, self._interval = transport, clock, interval_s
        directory = cache_dir or default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cache_path = directory / f"sstat-{_SLUG_RE.sub('_', cluster)[:120]}.json"
        self._lock = FileLock(str(self.cache_path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self.queries = 0  # sstat calls made by THIS process

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.cache_path.read_text())
            if isinstance(data, dict) and isinstance(data.get("wanted"), dict):
                return data
        except FileNotFoundError:
            pass
        except ValueError:
            pass  # torn or foreign file: start over
        return {"fetched_at": 0.0, "ok": False, "wanted": {}, "rows": {}}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.cache_path)

    def sample(self, job_id: str) -> tuple[float, Usage] | None:
        """(when, usage) of ``job_id`` from the newest shared answer, refreshing it (one sstat
        for every registered job) when its interval has passed. None when sstat has no row."""
        now = self._clock()
        data = self._read()
        registered = now - float(data["wanted"].get(job_id, 0)) < WANTED_TTL_S / 2
        if not (registered and now - float(data["fetched_at"]) < self._interval):
            try:
                with self._lock:
                    data = self._refresh(job_id)
            except Timeout:
                pass  # someone else is stuck on a slow sstat: use what we have
        row = data["rows"].get(job_id)
        return None if row is None else (float(data["fetched_at"]), Usage(**row))

    def _refresh(self, job_id: str) -> dict[str, Any]:
        now = self._clock()
        data = self._read()
        wanted = {j: t for j, t in data["wanted"].items() if now - float(t) < WANTED_TTL_S}
        wanted[job_id] = now
        data["wanted"] = wanted
        stale = now - float(data["fetched_at"]) >= self._interval
        if stale or job_id not in data.get("queried", []):
            self.queries += 1
            try:
                res = self._transport.run(sstat_command(sorted(wanted)), timeout=SSTAT_TIMEOUT_S)
                ok = res.exit_code == 0
                rows = parse_sstat_usage(res.stdout) if ok else {}
            except (TransportError, TimeoutError, OSError):
                ok, rows = False, {}
            data.update(
                fetched_at=now,
                ok=ok,
                queried=sorted(wanted),
                rows={j: u.__dict__ for j, u in rows.items()} if ok else {},
            )
        self._write(data)
        return data


@dataclass
class Point:
    t_s: float  # seconds since the first sample
    cpu_pct: float | None  # of one core, since the previous sample
    rss_mb: float
    gpu_util_pct: float | None = None


class LiveMetrics:
    """The samples of one running job: log lines while it runs, metadata at the end."""

    def __init__(
        self,
        sampler: SstatSampler,
        job_id: str,
        log: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.time,
        first_after_s: float = SSTAT_FIRST_AFTER_S,
        interval_s: float = SSTAT_INTERVAL_S,
    ):
        self._sampler, self.job_id, self._log, self._clock = sampler, job_id, log, clock
        self._first_after, self._interval = first_after_s, interval_s
        self._running_since: float | None = None
        self._last_at: float | None = None  # fetched_at of the last sample used
        self._last: tuple[float, Usage] | None = None
        self._t0: float | None = None
        self.points: list[Point] = []
        self.peak_rss_mb = 0.0
        self.peak_cpu_pct = 0.0

    def tick(self) -> None:
        """Called while the job runs (each poll tick); samples at most once per interval."""
        now = self._clock()
        if self._running_since is None:
            self._running_since = now
        if now - self._running_since < self._first_after:
            return
        if self._last_at is not None and now - self._last_at < self._interval:
            return
        try:
            got = self._sampler.sample(self.job_id)
        except OSError:  # the shared cache file cannot be written: live numbers are optional,
            got = None  # the job's watch and its final sacct metrics are not
        if got is None or got[0] == self._last_at:
            self._last_at = now if got is None else got[0]
            return
        at, usage = got
        self._add(at, usage)

    def _add(self, at: float, usage: Usage) -> None:
        self._t0 = at if self._t0 is None else self._t0
        cpu = None
        if self._last is not None and at > self._last[0]:
            cpu = max(0.0, 100 * (usage.cpu_s - self._last[1].cpu_s) / (at - self._last[0]))
            self.peak_cpu_pct = max(self.peak_cpu_pct, cpu)
        self._last, self._last_at = (at, usage), at
        self.peak_rss_mb = max(self.peak_rss_mb, usage.max_rss_mb, usage.rss_mb)
        self.points.append(
            Point(round(at - self._t0, 1), _r(cpu), round(usage.rss_mb, 1), usage.gpu_util_pct)
        )
        if len(self.points) > MAX_SERIES_POINTS:
            self.points = self.points[:1] + self.points[1::2]
        self._log(self.line(cpu, usage))

    def line(self, cpu: float | None, usage: Usage) -> str:
        parts = [f"slurm job {self.job_id} live:"]
        parts.append(f"cpu {cpu:.0f}%" if cpu is not None else "cpu n/a (first sample)")
        parts.append(f"rss {usage.rss_mb:.0f} MB (peak {self.peak_rss_mb:.0f} MB)")
        parts.append(f"{usage.tasks} task{'s' if usage.tasks != 1 else ''}")
        if usage.gpu_util_pct is not None:
            parts.append(f"gpu {usage.gpu_util_pct:.0f}%")
        if usage.gpu_mem_mb is not None:
            parts.append(f"gpu mem {usage.gpu_mem_mb:.0f} MB")
        return " ".join(parts[:1]) + " " + ", ".join(parts[1:])

    def metadata(self) -> dict[str, Any]:
        """``slurm/live_*`` entries (empty when the job was never sampled)."""
        if not self.points:
            return {}
        import dagster as dg

        from dagster_hpc.live_plot import plot_markdown

        p = METADATA_PREFIX
        md: dict[str, Any] = {
            f"{p}live_samples": len(self.points),
            f"{p}live_peak_rss_mb": round(self.peak_rss_mb, 1),
            f"{p}live_peak_cpu_pct": round(self.peak_cpu_pct, 1),
            f"{p}live_series": dg.MetadataValue.json(
                {
                    "columns": ["t_s", "cpu_pct", "rss_mb", "gpu_util_pct"],
                    "rows": [[q.t_s, q.cpu_pct, q.rss_mb, q.gpu_util_pct] for q in self.points],
                }
            ),
        }
        md[f"{p}live_plot"] = dg.MetadataValue.md(plot_markdown(self.job_id, self.points))
        return md


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
