"""Operator commands for the Slurm jobs dagster-hpc submitted.

    dagster-hpc jobs   [HOST] [--json]            # our jobs: Dagster run and step, state, reason
    dagster-hpc logs   JOB [HOST] [-f] [--stderr] # the payload's output (following: -f)
    dagster-hpc cancel JOB... [HOST] | --run RUN_ID [HOST]

The cluster is reached as for ``doctor`` (DAGSTER_HPC_SSH_* variables, flags override;
``--cluster-here`` when this machine is the login node). Our jobs are told apart by their name
(``dhpc-<step>``) and working directory (the run dir ``<base>/<run id>/<step>-<suffix>``),
so the Dagster run and step of each job come from Slurm itself: one squeue, no Dagster instance.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.cli._connection import add_connection_arguments, resource_from_args
from dagster_hpc.errors import DagsterHpcError
from dagster_hpc.rundir import EXIT_CODE, STDERR, STDOUT
from dagster_hpc.transport.base import Transport

# `logs -f`: one batched read per second (a person reading along notices no lag; the login node
# sees one small shell a second).
FOLLOW_INTERVAL_S = 1.0
QUERY_TIMEOUT_S = 60.0
JOB_NAME_PREFIX = job_name("")  # "dhpc-": every job we submit is named so
SQUEUE_JOBS = "squeue --me --noheader --format='%i|%j|%T|%r|%M|%P|%Z'"


@dataclass(frozen=True)
class OurJob:
    job_id: str
    name: str
    state: str
    reason: str
    elapsed: str
    partition: str
    run_dir: str
    run_id: str
    step: str


def parse_jobs(text: str) -> list[OurJob]:
    """Our jobs (dhpc- names) from ``SQUEUE_JOBS`` output, with run id and step from the run dir."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|", 6)
        if len(parts) != 7 or not parts[1].startswith(JOB_NAME_PREFIX):
            continue
        job_id, name, state, reason, elapsed, partition, workdir = parts
        segments = workdir.rstrip("/").split("/")
        run_id = segments[-2] if len(segments) >= 3 else ""
        step = segments[-1].rsplit("-", 1)[0] if segments else ""
        reason = "" if reason in ("None", "(null)") else reason
        jobs.append(OurJob(job_id, name, state, reason, elapsed, partition, workdir, run_id, step))
    return jobs


def register(subparsers: argparse._SubParsersAction) -> None:
    j = subparsers.add_parser("jobs", help="our Slurm jobs with their Dagster run and step")
    j.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(j)
    j.set_defaults(func=run_jobs)
    g = subparsers.add_parser("logs", help="a job's output (stdout.log; -f follows it)")
    g.add_argument("job", help="Slurm job id")
    g.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    g.add_argument("--stderr", action="store_true", help="stderr.log instead of stdout.log")
    _connection(g)
    g.set_defaults(func=run_logs)
    c = subparsers.add_parser("cancel", help="cancel our jobs by id, or every job of a Dagster run")
    c.add_argument("jobs", nargs="*", metavar="JOB", help="Slurm job ids")
    c.add_argument("--run", dest="run_id", help="cancel every job of this Dagster run")
    _connection(c)
    c.set_defaults(func=run_cancel)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-here", action="store_true", help="this machine is the login node (no SSH)"
    )
    add_connection_arguments(p, host_required=False)


def _transport(args: argparse.Namespace) -> Transport:
    if args.cluster_here:
        from dagster_hpc.transport.local import LocalTransport

        return LocalTransport()
    return resource_from_args(args).get_transport()


def _our_jobs(transport: Transport) -> list[OurJob]:
    res = transport.run(SQUEUE_JOBS, timeout=QUERY_TIMEOUT_S)
    if not res.ok:
        raise DagsterHpcError(f"squeue failed (exit {res.exit_code}): {res.stderr.strip()[-300:]}")
    return parse_jobs(res.stdout)


def _fail(exc: Exception) -> int:
    print(f"dagster-hpc: {exc}", file=sys.stderr)
    return 1


def run_jobs(args: argparse.Namespace) -> int:
    try:
        jobs = _our_jobs(_transport(args))
    except DagsterHpcError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([asdict(j) for j in jobs], indent=2))
        return 0
    if not jobs:
        print("no pending or running dagster-hpc jobs")
        return 0
    print(
        f"{'JOB':>10}  {'STATE':<10} {'ELAPSED':>10}  {'PARTITION':<10} {'RUN':<36}  STEP  (REASON)"
    )
    for j in jobs:
        reason = f"  ({j.reason})" if j.reason else ""
        print(
            f"{j.job_id:>10}  {j.state:<10} {j.elapsed:>10}  {j.partition:<10} {j.run_id:<36}  {j.step}{reason}"
        )
    return 0


def _run_dir_of(transport: Transport, job_id: str) -> str:
    """The job's working directory (= its run dir): squeue while it is known, else sacct."""
    q = shlex.quote(job_id)
    for cmd in (
        f"squeue --noheader --states=all --jobs {q} --format=%Z",
        f"sacct -X -n -P --jobs {q} --starttime now-30days --format=WorkDir",
    ):
        res = transport.run(cmd + " 2>/dev/null", timeout=QUERY_TIMEOUT_S)
        lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        if res.ok and lines:
            return lines[0]
    raise DagsterHpcError(f"job {job_id} is in neither squeue nor sacct (last 30 days)")


def run_logs(args: argparse.Namespace) -> int:
    if not args.job.isdigit():
        return _fail(DagsterHpcError(f"JOB must be a Slurm job id, got {args.job!r}"))
    try:
        transport = _transport(args)
        run_dir = _run_dir_of(transport, args.job)
        follow_log(transport, run_dir, STDERR if args.stderr else STDOUT, follow=args.follow)
    except DagsterHpcError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
    return 0


def follow_log(
    transport: Transport, run_dir: str, name: str, *, follow: bool, out=None, sleep=time.sleep
) -> None:
    """Print ``run_dir/name`` from the start; with ``follow`` until the job's exit_code file
    appears (one batched read of the log and exit_code per tick)."""
    out = out or sys.stdout.buffer
    offset, path, exit_path = 0, f"{run_dir}/{name}", f"{run_dir}/{EXIT_CODE}"
    while True:
        chunk, code = transport.read_many_from([(path, offset), (exit_path, 0)])
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
        if not follow or code:
            if code and follow:  # the job ended: whatever it wrote last is in the file now
                rest = transport.read_from(path, offset)
                out.write(rest)
                out.flush()
            return
        sleep(FOLLOW_INTERVAL_S)


def run_cancel(args: argparse.Namespace) -> int:
    if bool(args.jobs) == bool(args.run_id):
        return _fail(DagsterHpcError("give either JOB ids or --run RUN_ID"))
    try:
        transport = _transport(args)
        ours = _our_jobs(transport)
        if args.run_id:
            targets = [j for j in ours if j.run_id == args.run_id]
            if not targets:
                print(f"no pending or running job of run {args.run_id}")
                return 0
        else:
            by_id = {j.job_id: j for j in ours}
            missing = [j for j in args.jobs if j not in by_id]
            if missing:
                raise DagsterHpcError(
                    f"not a pending or running dagster-hpc job of yours: {', '.join(missing)} "
                    "(see `dagster-hpc jobs`)"
                )
            targets = [by_id[j] for j in args.jobs]
        ids = " ".join(shlex.quote(j.job_id) for j in targets)
        transport.check(f"scancel {ids}", timeout=QUERY_TIMEOUT_S, hint="cancel them by hand")
    except DagsterHpcError as exc:
        return _fail(exc)
    for j in targets:
        print(f"cancelled job {j.job_id} (run {j.run_id or '?'}, step {j.step or '?'})")
    return 0
