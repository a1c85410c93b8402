"""What a backend decided before anything is written: the one input of the run-directory scripts.

``Backend.prepare(step, request)`` returns a ``PreparedJob``; ``render_run_scripts`` turns it
into job.sh and launch.sh. A run writes exactly that text into the run directory (and sbatch
receives it); a dry run (``ComputeResource.render_job_script``, ``dagster-hpc render``) prints
the same text, so the printed script is the submitted one byte for byte, apart from the run
directory, which a run chooses at submit time.

The payload's interpreter (``PreparedJob.python``) has one precedence, decided here:

    launcher (PythonLauncher(python=...)) > env (the EnvConfig's interpreter)
    > SlurmResource.python > ComputeResource.python > the backend's default

(the launcher's own ``python`` wins inside its script; everything else picks ``python``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster_hpc.errors import ConfigError
from dagster_hpc.jobscript import RequeueSpec, render_job_script
from dagster_hpc.queue import QUEUE_METADATA_KEY, QueueConfig
from dagster_hpc.request import JobRequest
from dagster_hpc.rundir import JOB_SCRIPT, LAUNCH_SCRIPT

# The job name a dry run shows when no asset is given (a run uses the step's name).
DRY_RUN_STEP = "dagster-hpc"


@dataclass(frozen=True)
class StepInfo:
    """What a backend may know about the Dagster step: no Dagster context crosses into
    ``prepare``, so a dry run can give the same answers without one."""

    name: str  # the op's name: Slurm's job name
    queue_override: Mapping[str, Any] | None = None  # asset metadata "dagster-hpc/queue"
    log: Callable[[str], None] | None = None  # progress lines (environment build/ship)


@dataclass(frozen=True)
class PreparedJob:
    """A validated request plus every backend decision the scripts depend on."""

    request: JobRequest  # the launcher as it will run (Slurm may wrap it with an activation)
    python: str  # interpreter for Python payloads (precedence in the module docstring)
    header_lines: tuple[str, ...] = ()  # Slurm: the #SBATCH lines
    queue: QueueConfig | None = None  # the effective resource request (Slurm), for messages

    @property
    def requeue(self) -> RequeueSpec | None:
        """QueueConfig(requeue=True): what the job wrapper needs to requeue the job."""
        if self.queue is None or self.queue.effective_max_requeues is None:
            return None
        signal = self.queue.checkpoint_signal
        assert signal is not None  # requeue=True always has a (default) signal
        return RequeueSpec(max_requeues=self.queue.effective_max_requeues, signal=signal)

    def __iter__(self):  # noqa: ANN204 - the pre-PreparedJob ``request, header = prepare(...)``
        """Unpacks as ``(request, header_lines)``, what ``prepare`` returned before (kept for
        callers written against it; new code reads the fields)."""
        return iter((self.request, self.header_lines))


@dataclass(frozen=True)
class RunScripts:
    job: str  # job.sh: the wrapper sbatch (or bash, locally) runs
    launch: str  # launch.sh: the launcher's script, sourced by job.sh

    def dry_run_text(self) -> str:
        return (
            f"# ===== {JOB_SCRIPT} =====\n{self.job}\n# ===== {LAUNCH_SCRIPT} =====\n{self.launch}"
        )


def render_run_scripts(job: PreparedJob, run_dir: str) -> RunScripts:
    """job.sh and launch.sh for ``job`` in ``run_dir``: what a run writes, what a dry run prints."""
    launch = job.request.launcher.render(job.request.launch_request(job.python))
    job_text = render_job_script(run_dir, header_lines=job.header_lines, requeue=job.requeue)
    return RunScripts(job=job_text, launch=launch)


def choose_python(
    *,
    env: str | None = None,
    slurm: str | None = None,
    resource: str | None = None,
    default: str,
) -> str:
    """The payload's interpreter: env > SlurmResource.python > ComputeResource.python > default.

    (A launcher's own ``python=`` overrides the result inside its script.)
    """
    return env or slurm or resource or default


def asset_queue_override(
    metadata_by_key: Mapping[Any, Mapping[str, Any]], keys: Iterable[Any]
) -> dict[str, Any] | None:
    """``metadata={"dagster-hpc/queue": {...}}`` of the assets ``keys`` (merged in order), if any."""
    found: dict[str, Any] = {}
    for key in keys:
        value = (metadata_by_key.get(key) or {}).get(QUEUE_METADATA_KEY)
        if value is None:
            continue
        raw = getattr(value, "value", value)  # JsonMetadataValue or plain dict
        if not isinstance(raw, dict):
            name = key.to_user_string() if hasattr(key, "to_user_string") else str(key)
            raise ConfigError(
                f"asset metadata {QUEUE_METADATA_KEY!r} of {name} must be a mapping of QueueConfig fields, got {raw!r}"
            )
        found.update(raw)
    return found or None


def step_for_context(context: Any) -> StepInfo:
    """The step a Dagster context runs: its op name, its assets' queue metadata, its log."""
    op_context = getattr(context, "op_execution_context", context)
    try:
        name = op_context.op.name
    except AttributeError:
        name = DRY_RUN_STEP
    override = None
    if context is not None and getattr(context, "has_assets_def", False):
        override = asset_queue_override(
            context.assets_def.metadata_by_key, context.selected_asset_keys
        )
    log = getattr(getattr(context, "log", None), "info", None)
    return StepInfo(name=name, queue_override=override, log=log)


def step_for_asset(assets_def: Any, *, log: Callable[[str], None] | None = None) -> StepInfo:
    """The step that materializes ``assets_def`` (all its keys), for a dry run: the same job
    name and asset-metadata queue override a run of that asset gets."""
    return StepInfo(
        name=assets_def.node_def.name,
        queue_override=asset_queue_override(assets_def.metadata_by_key, assets_def.keys),
        log=log,
    )
