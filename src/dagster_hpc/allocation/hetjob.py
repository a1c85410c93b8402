"""Heterogeneous jobs that launch EVERY component.

A list of queue configurations becomes one hetjob: one ``#SBATCH`` block per component,
separated by ``#SBATCH hetjob``. The batch script runs on component 0's node, so it must start
each component itself: one ``srun --het-group=i`` per component, in the background, each
running the ordinary job wrapper of task directory ``t/i`` (its own Pipes channel, logs and
exit_code), then waits for all of them. (A batch script that just runs the payload would run
only component 0: the allocation of the others would sit idle.)
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_hpc import cancellation, step_calls
from dagster_hpc.allocation.results import MultiTaskOutcome
from dagster_hpc.allocation.runner import (
    SLURM_TASK_TAIL_IDLE_AFTER_S,
    SLURM_TASK_TAIL_IDLE_S,
    SLURM_TASK_TAIL_S,
    _env_fn,
    _live_jobs,
    _result,
    _scancel,
    _wait_slurm,
    step_name,
)
from dagster_hpc.allocation.tasks import (
    TaskChannel,
    TaskItem,
    TaskReader,
    task_dir,
    write_multitask_dir,
)
from dagster_hpc.backends.slurm_sacct import settle
from dagster_hpc.backends.slurm_script import SLURM_LOG, check_preflight, job_name, no_requeue_lines
from dagster_hpc.errors import ConfigError, PayloadError, RemoteCommandError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.transport import _shell

HETJOB_SCRIPT = "hetjob.sh"
HET_SUBMIT_TIMEOUT_S = 120.0


def render_hetjob_script(*, run_dir: str, queues: Sequence[QueueConfig], step: str) -> str:
    """The batch script of a hetjob over ``queues`` (component i runs task dir ``t/i``)."""
    if len(queues) < 2:
        raise ConfigError(
            f"a heterogeneous job needs at least 2 components (queue configurations), got {len(queues)}"
        )
    blocks = [list(q.to_sbatch_lines()) for q in queues]
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={shlex.quote(job_name(step))}",
        f"#SBATCH --output={SLURM_LOG}",
        # job-wide, so in the first block; unless a component says either way
        *no_requeue_lines([line for block in blocks for line in block]),
    ]
    for i, block in enumerate(blocks):
        if i:
            lines.append("#SBATCH hetjob")
        lines += block
    root = shlex.quote(run_dir.rstrip("/"))
    lines.append("# dagster-hpc hetjob: start EVERY component (its own task dir), wait for all")
    lines.append("pids=()")
    for i in range(len(queues)):
        lines.append(f"srun --het-group={i} --ntasks=1 --nodes=1 bash {root}/t/{i}/job.sh &")
        lines.append("pids+=($!)")
    lines += [
        "rc=0",
        'for p in "${pids[@]}"; do wait "$p" || rc=$?; done',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


@cancellation.cooperative_step  # run termination under the concurrent executor (hpc_executor)
@step_calls.numbered_call  # its own launch record, apart from the step's other calls
def run_hetjob_slurm(
    context: Any,
    backend: Any,  # SlurmBackend, prepared
    request: Any,
    queues: Sequence[QueueConfig],
    *,
    items: Sequence[TaskItem],
    base_env: Mapping[str, str],
    extras: Mapping[str, Any],
    python: str,
) -> MultiTaskOutcome:
    from dagster_hpc.allocation.runner import _context_data_fn

    transport = backend.transport
    step = step_name(context)
    answer = backend.preflight_answer()
    for q in queues:  # each component against its own partition (limits, GPUs) before submit
        check_preflight(
            answer,
            cluster=backend.cluster,
            base_dir=backend.remote_base_dir,
            python=python,
            activate=backend.activate,
            partition=q.partition,
            need_python=False,
            queue=q,
        )
    run_dir = backend.run_dir_for(context.run.run_id, step)
    staging = Path(tempfile.mkdtemp(prefix="dagster-hpc-het-"))
    try:
        write_multitask_dir(
            staging,
            run_dir,
            request,
            python=python,
            items=items,
            indices=range(len(items)),
            env_for=_het_env(_env_fn(context, base_env, request, False)),
            context_for=_context_data_fn(context, extras, False),
        )
        (staging / HETJOB_SCRIPT).write_text(
            render_hetjob_script(run_dir=run_dir, queues=queues, step=step)
        )
        (staging / HETJOB_SCRIPT).chmod(0o700)
        data = _shell.tar_directory(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    q = shlex.quote(run_dir)
    cmd = f"{_shell.untar_command(run_dir, 0o700)} && cd {q} && sbatch --parsable {HETJOB_SCRIPT}"
    res = transport.run(cmd, timeout=HET_SUBMIT_TIMEOUT_S, stdin=data)
    if not res.ok:
        raise RemoteCommandError(
            f"sbatch {HETJOB_SCRIPT} (in {run_dir})",
            res.exit_code,
            res.stdout,
            res.stderr,
            hint="Slurm refused the heterogeneous job: read its message above (each component's "
            "partition, GPUs and limits)",
        )
    job_id = res.stdout.strip().splitlines()[-1].split(";")[0].strip()
    if not job_id.isdigit():
        raise PayloadError(f"sbatch answered {res.stdout!r}, not a job id (run dir {run_dir})")
    from dagster_hpc._dagster_adapter import record_launch
    from dagster_hpc.backends.base import JobHandle

    record_launch(
        context,
        JobHandle(backend="slurm-hetjob", job_id=job_id, run_dir=run_dir, cluster=backend.cluster),
    )
    context.log.info(
        f"dagster-hpc: heterogeneous job {job_id} with {len(queues)} components submitted (run dir {run_dir})"
    )
    channels = [TaskChannel(i, it.key, task_dir(run_dir, i)) for i, it in enumerate(items)]
    reader = TaskReader(
        transport,
        channels,
        log=context.log,
        interval_s=SLURM_TASK_TAIL_S,
        idle_interval_s=SLURM_TASK_TAIL_IDLE_S,
        idle_after_s=SLURM_TASK_TAIL_IDLE_AFTER_S,
    )
    with reader:
        try:
            _wait_slurm(transport, reader, [job_id])
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            context.log.warning(
                f"dagster-hpc: run interrupted: cancelling heterogeneous job {job_id}"
            )
            _scancel(transport, [job_id])
            raise
        reader.stop()
    metrics = _het_metrics(transport, job_id, len(items))
    results = [
        _result(
            ch,
            items[ch.index],
            run_dir,
            f"{job_id}+{ch.index}",
            metrics.get(ch.index),
            reused=False,
        )
        for ch in channels
    ]
    return MultiTaskOutcome("hetjob", run_dir, results, 1, [job_id])


def _het_env(inner: Any) -> Any:
    def env_for(i: int, item: TaskItem, tdir: str) -> dict[str, str]:
        env = inner(i, item, tdir)
        env["DAGSTER_HPC_HET_GROUP"] = str(i)
        return env

    return env_for


def _het_metrics(transport: Any, job_id: str, n: int) -> dict[int, Any]:
    """Component i -> JobMetrics of ``<job>+<i>`` (its srun step included): one settle
    (``slurm_sacct.settle``) for the whole hetjob."""
    wanted = [f"{job_id}+{i}" for i in range(n)]
    got = settle(transport, [job_id], wanted).metrics
    return {i: got[w] for i, w in enumerate(wanted) if w in got}


def run_hetjob(
    resource: Any,
    context: Any,
    payload: Any,
    queues: Sequence[QueueConfig | Mapping[str, Any]],
    *,
    items: Sequence[Mapping[str, Any]] | None = None,
    launcher: Any = None,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    extra_files: Sequence[str | Path] = (),
) -> MultiTaskOutcome:
    """One hetjob, one component per queue; component i runs ``payload`` with extras
    ``{**extras, **items[i], "het_group": i}`` and ``DAGSTER_HPC_HET_GROUP=i``."""
    from dagster_hpc.compute import prepare_call

    if resource.mode != "slurm":
        raise ConfigError(
            f"run_hetjob needs mode='slurm' (a heterogeneous job is a Slurm allocation), got mode={resource.mode!r}"
        )
    if isinstance(queues, Mapping) or len(queues) < 2:
        raise ConfigError("run_hetjob needs queues=[...] with at least 2 queue configurations")
    if items is not None and len(items) != len(queues):
        raise ConfigError(
            f"items has {len(items)} entries for {len(queues)} components: give one per component"
        )
    backend, step, job = prepare_call(
        resource, context, payload, launcher=launcher, args=args, extra_env=extra_env,
        extras=extras, extra_files=extra_files,
    )  # fmt: skip
    request = job.request
    base = backend.queue.merged(step.queue_override)
    merged = [base.merged(q) for q in queues]
    for q in merged:
        q.refuse_requeue("heterogeneous jobs (run_hetjob)")
    task_items = [
        TaskItem(key=f"component-{i}", extras={**(items[i] if items else {}), "het_group": i})
        for i in range(len(queues))
    ]
    outcome = run_hetjob_slurm(
        context,
        backend,
        request,
        merged,
        items=task_items,
        base_env=dict(resource.extra_env),
        extras=dict(request.extras),
        python=job.python,
    )
    err = outcome.error()
    if err is not None:
        raise err
    return outcome


__all__ = ["_live_jobs", "render_hetjob_script", "run_hetjob"]
