"""ComputeResource: the facade users call. ``mode`` picks where the payload runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from dagster_hpc._strict import StrictResource
from dagster_hpc.allocation.session import SessionConfig
from dagster_hpc.backends.base import Backend
from dagster_hpc.backends.local import LocalBackend
from dagster_hpc.backends.slurm_resource import SlurmResource
from dagster_hpc.errors import ConfigError
from dagster_hpc.execution import AnyContext, execute
from dagster_hpc.launchers import Launcher
from dagster_hpc.pipes.reader import FORWARD_CAP_BYTES, FORWARD_CAP_MIN_BYTES, check_forward_cap
from dagster_hpc.prepared import (
    PreparedJob,
    StepInfo,
    render_run_scripts,
    step_for_asset,
    step_for_context,
)
from dagster_hpc.queue import QueueConfig
from dagster_hpc.request import Payload, build_request, check_env
from dagster_hpc.retention import DEFAULT_KEEP_RUN_DIRS, KeepRunDirs, check_keep_run_dirs

# The run directory shown by a dry run (the real one is chosen at submit time).
DRY_RUN_DIR = "/path/to/run-dir"


class ComputeResource(StrictResource):
    """Run a payload (Python file, shell script or argv list) through Dagster Pipes.

    ``mode="local"`` runs it as a local subprocess; ``mode="slurm"`` submits the very same job
    script to a Slurm cluster. Immutable like every Dagster resource: per-run state lives in
    the backend object each ``run()`` creates.
    """

    # descriptions show up in the Dagster UI's resource configuration
    mode: Literal["local", "slurm"] = Field(
        default="local", description="Where payloads run: 'local' (a subprocess here) or 'slurm'."
    )
    base_dir: str | None = Field(
        default=None,
        description="Local mode: where run directories are created (default: a per-user directory in the temp dir).",
    )
    python: str | None = Field(
        default=None,
        description="Interpreter for .py payloads (local default: the Python running Dagster).",
    )
    extra_env: dict[str, str] = Field(
        default={},
        description="Environment variables for every payload; a run()'s own extra_env wins.",
    )
    keep_run_dirs: KeepRunDirs = Field(
        default=DEFAULT_KEEP_RUN_DIRS,
        description="Run directories after a step: 'failed' (default: remove successful ones once their "
        "output was read, keep failed ones for debugging), 'always', or 'never'.",
    )
    forward_cap_bytes: int = Field(
        default=FORWARD_CAP_BYTES,
        description="Bytes of a job's stdout, and of its stderr, forwarded to Dagster as log lines "
        f"(default {FORWARD_CAP_BYTES}: 8 MiB; at least {FORWARD_CAP_MIN_BYTES}). Past it the stream is no "
        "longer read: the rest stays in the run directory (then kept), and a warning and the metadata "
        "'dagster-hpc/stdout_not_forwarded' say where. Guards the step and the Dagster host's disk "
        "against a payload that prints gigabytes.",
    )
    array_throttle: int | None = Field(
        default=None,
        description="Job arrays (run_array, multi-partition steps): at most this many items run at "
        "once (sbatch --array=...%N; locally: processes). Default: no limit on Slurm, the CPU count locally.",
    )
    session: SessionConfig | None = Field(
        default=None,
        description="mode='slurm': run the steps of a Dagster run inside ONE shared allocation "
        "(session mode, docs/allocation-modes.md); None: one Slurm job per step.",
    )
    slurm: SlurmResource | None = Field(
        default=None,
        description="mode='slurm': cluster, default queue and paths (None: SlurmResource.from_env()).",
    )

    def __init__(self, **data: Any):
        super().__init__(**data)
        if isinstance(self.forward_cap_bytes, int):  # an EnvVar is checked when run() reads it
            check_forward_cap(self.forward_cap_bytes)

    def run(
        self,
        context: AnyContext,
        payload: Payload,
        *,
        launcher: Launcher | None = None,
        args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        extras: Mapping[str, Any] | None = None,
        extra_files: Sequence[str | Path] = (),
        queue: Any = None,
        pipes: bool = True,
    ) -> dg.PipesClientCompletedInvocation:
        """Run ``payload`` and wait; ``yield from compute.run(...).get_results()`` in an asset.

        ``pipes=False``: the payload does not use Dagster Pipes (a plain tool or shell script);
        its output still becomes log lines, and Dagster's "no messages" warning is not shown.

        Everything is validated before anything runs (ConfigError). A payload that fails
        raises PayloadError with its exit code and the last lines of its stderr.
        """
        check_keep_run_dirs(self.keep_run_dirs)
        check_forward_cap(self.forward_cap_bytes)
        base_env = check_env(self.extra_env, "ComputeResource.extra_env")
        from dagster_hpc.allocation.api import multi_partition_keys, run_partitions

        keys = multi_partition_keys(context)
        if keys is not None:  # a single-run backfill: one array task per partition
            return run_partitions(  # type: ignore[return-value]
                self, context, payload, keys, launcher=launcher, args=args, extra_env=extra_env,
                extras=extras, extra_files=extra_files, queue=queue, throttle=self.array_throttle,
            )  # fmt: skip
        backend, _, job = prepare_call(
            self, context, payload, launcher=launcher, args=args, extra_env=extra_env,
            extras=extras, extra_files=extra_files, queue=queue,
        )  # fmt: skip
        return execute(
            context, backend, job, base_env=base_env, keep_run_dirs=self.keep_run_dirs, pipes=pipes,
            forward_cap_bytes=self.forward_cap_bytes,
        )  # fmt: skip

    def run_array(
        self,
        context: AnyContext,
        payload: Payload,
        *,
        items: Sequence[Any],
        launcher: Launcher | None = None,
        args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        extras: Mapping[str, Any] | None = None,
        extra_files: Sequence[str | Path] = (),
        queue: Any = None,
        throttle: int | None = None,
    ) -> Any:
        """Fan-out: run ``payload`` once per item (a dict of extras, a key string or a
        ``TaskItem``) as ONE job array (split by the site's MaxArraySize); returns the outcome
        with one ``TaskResult`` per item (``.results``: key, extras, metadata, metrics).
        Raises PayloadError naming every failed item (key, state, stderr tail)."""
        from dagster_hpc.allocation.api import run_array

        return run_array(
            self, context, payload, items, launcher=launcher, args=args, extra_env=extra_env,
            extras=extras, extra_files=extra_files, queue=queue,
            throttle=throttle if throttle is not None else self.array_throttle,
        )  # fmt: skip

    def run_hetjob(
        self,
        context: AnyContext,
        payload: Payload,
        *,
        queues: Sequence[Any],
        items: Sequence[Mapping[str, Any]] | None = None,
        launcher: Launcher | None = None,
        args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        extras: Mapping[str, Any] | None = None,
        extra_files: Sequence[str | Path] = (),
    ) -> Any:
        """One heterogeneous job, one component per queue configuration (e.g. a CPU and a GPU
        partition); EVERY component runs ``payload`` (``srun --het-group=i``) with its own Pipes
        channel; ``DAGSTER_HPC_HET_GROUP`` / extras ``het_group`` tell it which one it is."""
        from dagster_hpc.allocation.hetjob import run_hetjob

        return run_hetjob(
            self, context, payload, queues, items=items, launcher=launcher, args=args,
            extra_env=extra_env, extras=extras, extra_files=extra_files,
        )  # fmt: skip

    def render_job_script(
        self,
        payload: Payload,
        *,
        launcher: Launcher | None = None,
        args: Sequence[str] = (),
        queue: QueueConfig | Mapping[str, Any] | None = None,
        run_dir: str = DRY_RUN_DIR,
        asset: dg.AssetsDefinition | None = None,
        check: bool = False,
    ) -> str:
        """Dry run: job.sh and launch.sh exactly as ``run`` would submit them, from the same
        ``backend.prepare`` and the same rendering (nothing is submitted).

        ``asset``: the asset the call belongs to, for its job name and its
        ``metadata={"dagster-hpc/queue": ...}`` override. In slurm mode nothing connects unless
        the job depends on the cluster's answer: with ``env=`` the environment is looked up (and
        built and shipped on its first use, as a run would) because its interpreter is in the
        script; ``check=True`` also runs the run's preflight checks (partition, limits, python).
        Only the run directory differs from a run's (a run chooses it when it submits).
        """
        backend = make_backend(self)
        request = build_request(payload, launcher=launcher, args=args, queue=queue)
        if asset is not None:
            step = step_for_asset(asset)
        else:
            step = StepInfo(name=request.describe().rsplit("/", 1)[-1])
        job = backend.prepare(step, request, check=check)
        return render_run_scripts(job, run_dir).dry_run_text()


def _slurm_settings(resource: ComputeResource) -> SlurmResource:
    slurm = resource.slurm if resource.slurm is not None else SlurmResource.from_env()
    if resource.python and slurm.python and resource.python != slurm.python:
        raise ConfigError(
            f"python is set twice: ComputeResource(python={resource.python!r}) and "
            f"SlurmResource(python={slurm.python!r}); set it on SlurmResource only"
        )
    if resource.python and not slurm.python:
        slurm = slurm.model_copy(update={"python": resource.python})
    return slurm


def _slurm_backend(resource: ComputeResource) -> Backend:
    """mode="slurm": the resource's ``slurm`` settings, or SlurmResource.from_env() if unset."""
    if resource.session is not None:
        from dagster_hpc.allocation.session import make_session_backend

        return make_session_backend(_slurm_settings(resource), resource.session)
    return _slurm_settings(resource).make_backend()


def _local_backend(resource: ComputeResource) -> Backend:
    return LocalBackend(resource.base_dir, python=resource.python)


# mode -> backend factory. Each mode registers exactly one entry.
BACKEND_FACTORIES: dict[str, Callable[[ComputeResource], Backend]] = {
    "local": _local_backend,
    "slurm": _slurm_backend,
}


def prepare_call(
    resource: ComputeResource,
    context: AnyContext,
    payload: Payload,
    *,
    launcher: Launcher | None = None,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    extra_files: Sequence[str | Path] = (),
    queue: Any = None,
) -> tuple[Backend, StepInfo, PreparedJob]:
    """The backend, the step and the prepared job of one ``run`` / ``run_array`` /
    ``run_hetjob`` call: the one place a call's JobRequest is built and validated (before
    anything is staged or submitted)."""
    backend = make_backend(resource)
    request = build_request(
        payload,
        launcher=launcher,
        args=args,
        extra_env=extra_env,
        extras=extras,
        extra_files=extra_files,
        queue=queue,
    )
    step = step_for_context(context)
    return backend, step, backend.prepare(step, request)


def make_backend(resource: ComputeResource) -> Backend:
    """The backend for ``resource.mode``; unknown modes fail before anything runs."""
    return _factory_for(resource.mode)(resource)


def _factory_for(mode: str) -> Callable[[ComputeResource], Backend]:
    factory = BACKEND_FACTORIES.get(mode)
    if factory is None:
        known = ", ".join(sorted(BACKEND_FACTORIES))
        raise ConfigError(
            f"unknown mode {mode!r}: use one of {known} (set it in the resource config or DAGSTER_HPC_MODE)"
        )
    return factory
