"""Live sstat metrics: parsing, one shared query per interval for all jobs, log lines, plot."""

from __future__ import annotations

import base64

import dagster as dg

from dagster_hpc import ComputeResource
from dagster_hpc.efficiency import CPU_EFFICIENCY_KEY, efficiency_checks
from dagster_hpc.live_metrics import LiveMetrics, SstatSampler, parse_sstat_usage
from dagster_hpc.transport.base import CommandResult, Transport

ROWS = (
    "361.batch|4356K|1|cpu=00:00:04,energy=0,fs/disk=12129,mem=4356K,pages=0,vmem=7692K\n"
    "361.0|200M|2|cpu=00:01:00,mem=150M,gres/gpuutil=80,gres/gpumem=1G\n"
    "362.batch|1G|1|cpu=00:00:30,mem=900M\n"
)


def test_parse_sums_steps_per_job():
    usage = parse_sstat_usage(ROWS)
    assert set(usage) == {"361", "362"}
    u = usage["361"]
    assert u.cpu_s == 64 and u.tasks == 3 and round(u.rss_mb, 2) == round(4356 / 1024 + 150, 2)
    assert u.max_rss_mb == 200 and u.gpu_util_pct == 80 and u.gpu_mem_mb == 1024
    assert usage["362"].gpu_util_pct is None


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Sstat(Transport):
    """Answers sstat with CPU seconds that grow by ``rate`` per second of the clock."""

    def __init__(self, clock: Clock, rate: float = 2.0):
        super().__init__()
        self.clock, self.rate, self.commands = clock, rate, []

    def run(self, command, *, timeout=None, stdin=None):
        self.commands.append(command)
        cpu = int((self.clock.t - 1000) * self.rate)
        jobs = command.split("--jobs ")[1].split()[0].strip("'").split(",")
        out = "".join(
            f"{j}.batch|{100 + cpu}M|1|cpu={cpu // 60:02d}:{cpu % 60:02d},mem={90 + cpu}M\n"
            for j in jobs
        )
        return CommandResult(0, out, "")

    def put_tree(self, *a, **k):
        raise NotImplementedError

    def put_file(self, *a, **k):
        raise NotImplementedError

    def read_from(self, *a, **k):
        raise NotImplementedError


def test_one_sstat_per_interval_for_every_job_of_the_machine(tmp_path):
    clock = Clock()
    transport = Sstat(clock)
    # two step processes (two samplers on the same cache file), two jobs
    a = SstatSampler(transport, "c", cache_dir=tmp_path, clock=clock)
    b = SstatSampler(transport, "c", cache_dir=tmp_path, clock=clock)
    assert a.sample("1") is not None
    assert b.sample("2") is not None  # new job: joins the query at once
    clock.t += 10
    a.sample("1")
    b.sample("2")
    clock.t += 1
    a.sample("1")
    b.sample("2")  # within the interval: cached
    assert len(transport.commands) == 3
    assert "--jobs 1,2 " in transport.commands[-1]


def test_live_metrics_log_lines_peak_series_and_plot(tmp_path):
    clock = Clock()
    sampler = SstatSampler(Sstat(clock), "c", cache_dir=tmp_path, clock=clock)
    lines: list[str] = []
    live = LiveMetrics(sampler, "7", lines.append, clock=clock)
    for _ in range(45):  # a 45 s job, polled each second
        live.tick()
        clock.t += 1
    assert len(live.points) == 4  # first after 10 s, then every 10 s
    assert lines[0].startswith("slurm job 7 live: cpu n/a (first sample), rss")
    assert "cpu 200%" in lines[1] and "1 task" in lines[1]
    md = live.metadata()
    assert md["slurm/live_samples"] == 4 and md["slurm/live_peak_cpu_pct"] == 200.0
    assert md["slurm/live_peak_rss_mb"] == live.points[-1].rss_mb + 10
    assert md["slurm/live_series"].data["rows"][1][1] == 200.0
    plot = md["slurm/live_plot"].md_str
    png = base64.b64decode(plot.split("base64,", 1)[1].rstrip(")"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 2_000 < len(png) < 60_000


def test_short_jobs_are_never_sampled(tmp_path):
    clock = Clock()
    transport = Sstat(clock)
    live = LiveMetrics(
        SstatSampler(transport, "c", cache_dir=tmp_path, clock=clock), "8", print, clock=clock
    )
    for _ in range(9):
        live.tick()
        clock.t += 1
    assert transport.commands == [] and live.metadata() == {}


def test_efficiency_checks_warn_below_the_bound_and_vanish_in_local_mode():
    @dg.asset
    def wasteful():
        return dg.MaterializeResult(
            metadata={CPU_EFFICIENCY_KEY: 3.0, "slurm/mem_efficiency_pct": 60.0}
        )

    assert efficiency_checks([wasteful], compute=ComputeResource()) == []
    checks = efficiency_checks([wasteful], compute="slurm")
    result = dg.materialize([wasteful, *checks])
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    cpu = evals["slurm_cpu_efficiency_pct_bounds_check"]
    assert not cpu.passed and cpu.severity is dg.AssetCheckSeverity.WARN
    assert evals["slurm_mem_efficiency_pct_bounds_check"].passed
