"""Slurm accounting (sacct / sstat rows) -> Dagster metadata. Pure: no I/O, no Dagster import.

The backend runs ``sacct_command(job_id)`` and hands the text to ``parse_sacct``. Works for
failed jobs too (a job killed for memory or time still has a row). When the site has no
accounting, ``parse_sacct`` returns ``None`` and ``unavailable_metadata`` says why, so the asset
shows "metrics unavailable" instead of silently missing numbers.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "ElapsedRaw",
    "NNodes",
    "AllocCPUS",
    "TotalCPU",
    "CPUTimeRAW",
    "MaxRSS",
    "AllocTRES",
    "NodeList",
    "Partition",
    "Reason",
)
# The same without AllocTRES: that one field makes sacct read slurmdbd's TRES table first (~80 ms
# of a ~170 ms query); the final record of a job slurmctld still lists takes it from squeue.
SACCT_FIELDS_NO_TRES = tuple(f for f in SACCT_FIELDS if f != "AllocTRES")
SSTAT_FIELDS = ("JobID", "MaxRSS", "AveCPU", "NTasks")
# What sacct prints (on stderr or stdout) when the site runs without slurmdbd.
ACCOUNTING_DISABLED_MARKERS = ("accounting storage is disabled", "slurmdbd: not running")
# sacct's words when slurmdbd (or its database) is down: asking again within seconds cannot help
ACCOUNTING_UNREACHABLE_MARKERS = (
    "problem talking to the database",
    "failed to open persistent connection",
)
METADATA_PREFIX = "slurm/"

_SIZE_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)$")
_SIZE_TO_MB = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}
# AllocTRES mem= values: a bare number is megabytes there.
_TRES_SIZE_TO_MB = {**_SIZE_TO_MB, "": 1}
_DURATION_RE = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)$")


def sacct_command(job_id: str, *, start_time: str = "now-7days") -> str:
    """The command whose output ``parse_sacct`` reads (``--starttime``: sacct is windowed)."""
    return " ".join(
        [
            "sacct",
            "--parsable2",
            "--noheader",
            "--jobs",
            shlex.quote(job_id),
            "--starttime",
            shlex.quote(start_time),
            "--format",
            ",".join(SACCT_FIELDS),
        ]
    )


def sstat_command(job_id: str) -> str:
    return " ".join(
        [
            "sstat",
            "--parsable2",
            "--noheader",
            "--allsteps",
            "--jobs",
            shlex.quote(job_id),
            "--format",
            ",".join(SSTAT_FIELDS),
        ]
    )


def accounting_disabled(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in ACCOUNTING_DISABLED_MARKERS)


def accounting_unreachable(text: str) -> str:
    """sacct's last error line when slurmdbd cannot be reached, else ""."""
    for line in reversed(text.splitlines()):
        if any(marker in line.lower() for marker in ACCOUNTING_UNREACHABLE_MARKERS):
            return line.strip()
    return ""


def parse_size_mb(text: str, *, bare_unit_mb: bool = False) -> float | None:
    """MB for "112004K", "1.5G", "200M"; a bare number is bytes (sacct) or MB (TRES)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    table = _TRES_SIZE_TO_MB if bare_unit_mb else _SIZE_TO_MB
    return float(m["n"]) * table[m["unit"]]


def parse_duration_s(text: str) -> float | None:
    """Seconds for sacct durations: "MM:SS.mmm", "HH:MM:SS", "D-HH:MM:SS"."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        return None
    return ((int(m["d"] or 0) * 24 + int(m["h"] or 0)) * 60 + int(m["m"])) * 60 + float(m["s"])


def parse_tres(text: str) -> dict[str, str]:
    """{"cpu": "2", "mem": "512M", "gres/gpu": "1", ...} from "cpu=2,mem=512M,gres/gpu=1"."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


@dataclass(frozen=True)
class JobMetrics:
    """One Slurm job's accounting, aggregated over its steps."""

    job_id: str
    state: str  # first word of sacct's State ("CANCELLED by 0" -> "CANCELLED")
    exit_code: int | None
    signal: int | None
    elapsed_s: int | None
    nnodes: int | None
    alloc_cpus: int | None
    total_cpu_s: float | None
    cpu_time_s: int | None  # elapsed * allocated CPUs
    max_rss_mb: float | None  # max over steps
    alloc_tres: dict[str, str] = field(default_factory=dict)
    node_list: str = ""
    partition: str = ""
    reason: str = ""
    step_states: dict[str, str] = field(default_factory=dict)

    @property
    def from_job_record(self) -> bool:
        """False for slurmdbd's stand-in row: when a short job's step record reaches slurmdbd
        before the job's own start record, sacct shows a row named "allocation" with no
        partition (and PENDING, then even COMPLETED) until the real record replaces it. Every
        real job record has a partition, so its absence means "not Slurm's final record yet".
        A step's record (``<job>.<step>``, a session step) never has a partition: it is the
        step's own record, sent by slurmstepd when the step ends (no stand-in exists for it);
        without this every session step waited out the whole settle timeout (10 s)."""
        return bool(self.partition) or "." in self.job_id

    @property
    def node_hours(self) -> float | None:
        if self.elapsed_s is None or self.nnodes is None:
            return None
        return self.elapsed_s * self.nnodes / 3600

    @property
    def cpu_hours(self) -> float | None:
        """Allocated CPU-hours (what the site charges for), not the CPU time used."""
        if self.elapsed_s is None or self.alloc_cpus is None:
            return None
        return self.elapsed_s * self.alloc_cpus / 3600

    @property
    def gpu_hours(self) -> float | None:
        if self.elapsed_s is None:
            return None
        return self.elapsed_s * self.gpus / 3600

    @property
    def cpu_efficiency_pct(self) -> float | None:
        if self.total_cpu_s is None or not self.cpu_time_s:
            return None
        return 100 * self.total_cpu_s / self.cpu_time_s

    @property
    def alloc_mem_mb(self) -> float | None:
        mem = self.alloc_tres.get("mem")
        return parse_size_mb(mem, bare_unit_mb=True) if mem else None

    @property
    def mem_efficiency_pct(self) -> float | None:
        """Peak RSS of a task vs the memory allocated per node (sacct's MaxRSS is per task)."""
        alloc = self.alloc_mem_mb
        if self.max_rss_mb is None or not alloc:
            return None
        return 100 * self.max_rss_mb / (alloc / (self.nnodes or 1))

    @property
    def gpus(self) -> int:
        """Allocated GPUs: "gres/gpu" when present, else the sum of typed "gres/gpu:<type>"."""
        if "gres/gpu" in self.alloc_tres:
            return _int(self.alloc_tres["gres/gpu"]) or 0
        return sum(_int(v) or 0 for k, v in self.alloc_tres.items() if k.startswith("gres/gpu:"))

    @property
    def over_memory(self) -> bool:
        """Killed for memory: Slurm says OUT_OF_MEMORY, or (OverMemoryKill on 22.05) a step was
        killed by SIGKILL after its peak RSS reached the allocation."""
        if self.state == "OUT_OF_MEMORY" or "OUT_OF_MEMORY" in self.step_states.values():
            return True
        alloc = self.alloc_mem_mb
        per_node = alloc / (self.nnodes or 1) if alloc else None
        return bool(
            self.signal == 9
            and per_node
            and self.max_rss_mb is not None
            and self.max_rss_mb >= per_node
        )

    def to_metadata(self) -> dict[str, Any]:
        """Flat ``slurm/*`` entries (plain values; Dagster wraps them). Missing numbers are left out."""
        p = METADATA_PREFIX
        md: dict[str, Any] = {
            f"{p}job_id": self.job_id,
            f"{p}state": self.state,
            f"{p}metrics_available": True,
        }
        optional: dict[str, Any] = {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "elapsed_s": self.elapsed_s,
            "nodes": self.nnodes,
            "alloc_cpus": self.alloc_cpus,
            "node_hours": _round(self.node_hours, 6),
            "cpu_hours": _round(self.cpu_hours, 6),
            "gpu_hours": _round(self.gpu_hours, 6),
            "cpu_efficiency_pct": _round(self.cpu_efficiency_pct, 1),
            "max_rss_mb": _round(self.max_rss_mb, 1),
            "alloc_mem_mb": _round(self.alloc_mem_mb, 1),
            "mem_efficiency_pct": _round(self.mem_efficiency_pct, 1),
            "gpus": self.gpus,
            "alloc_tres": ",".join(f"{k}={v}" for k, v in self.alloc_tres.items()) or None,
            "node_list": self.node_list or None,
            "partition": self.partition or None,
        }
        md.update({p + k: v for k, v in optional.items() if v is not None})
        return md


def _round(v: float | None, ndigits: int) -> float | None:
    return None if v is None else round(v, ndigits)


def parse_sacct(
    text: str, job_id: str, fields: tuple[str, ...] = SACCT_FIELDS
) -> JobMetrics | None:
    """Aggregate the rows of ``sacct_command(job_id)`` (sacct's ``--format`` was ``fields``);
    ``None`` if the job has no row (yet)."""
    if accounting_disabled(text):
        return None
    rows = [line.split("|") for line in text.splitlines() if line.strip()]
    rows = [dict(zip(fields, r, strict=False)) for r in rows if len(r) >= len(fields)]
    main = next((r for r in rows if r["JobID"] == job_id), None)
    if main is None:
        return None
    steps = [r for r in rows if r["JobID"].startswith(job_id + ".")]
    rss = [
        v
        for v in (parse_size_mb(r["MaxRSS"]) for r in [main, *steps] if r["MaxRSS"])
        if v is not None
    ]
    exit_code, signal = _parse_exit(main["ExitCode"])
    # The job row's ExitCode is 0:0 when only a step died from a signal: look at the steps too.
    if not signal:
        step_signals = [s for s in (_parse_exit(r["ExitCode"])[1] for r in steps) if s]
        signal = step_signals[0] if step_signals else signal
    return JobMetrics(
        job_id=job_id,
        state=main["State"].split()[0] if main["State"] else "UNKNOWN",
        exit_code=exit_code,
        signal=signal,
        elapsed_s=_int(main["ElapsedRaw"]),
        nnodes=_int(main["NNodes"]),
        alloc_cpus=_int(main["AllocCPUS"]),
        total_cpu_s=parse_duration_s(main["TotalCPU"]),
        cpu_time_s=_int(main["CPUTimeRAW"]),
        max_rss_mb=max(rss) if rss else None,
        alloc_tres=parse_tres(main.get("AllocTRES", "")),
        node_list=main["NodeList"],
        partition=main["Partition"],
        reason=main["Reason"] if main["Reason"] not in ("None", "") else "",
        step_states={r["JobID"]: r["State"].split()[0] for r in steps if r["State"]},
    )


def _parse_exit(text: str) -> tuple[int | None, int | None]:
    """sacct's "code:signal"."""
    code, _, sig = text.partition(":")
    return _int(code), _int(sig)


def unavailable_metadata(job_id: str, reason: str) -> dict[str, Any]:
    """Metadata saying the numbers are missing and why (accounting off, job not in sacct yet)."""
    p = METADATA_PREFIX
    return {
        f"{p}job_id": job_id,
        f"{p}metrics_available": False,
        f"{p}metrics_unavailable_reason": reason,
    }


def parse_sstat(text: str) -> dict[str, Any]:
    """Live usage of a running job (sstat asks slurmd directly; works without accounting)."""
    rss: list[float] = []
    cpu: list[float] = []
    tasks = 0
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(SSTAT_FIELDS):
            continue
        row = dict(zip(SSTAT_FIELDS, parts, strict=False))
        if (v := parse_size_mb(row["MaxRSS"])) is not None:
            rss.append(v)
        if (c := parse_duration_s(row["AveCPU"])) is not None:
            cpu.append(c)
        tasks += _int(row["NTasks"]) or 0
    p = METADATA_PREFIX
    out: dict[str, Any] = {}
    if rss:
        out[f"{p}live_max_rss_mb"] = round(max(rss), 1)
    if cpu:
        out[f"{p}live_ave_cpu_s"] = round(max(cpu), 3)
    if tasks:
        out[f"{p}live_tasks"] = tasks
    return out
