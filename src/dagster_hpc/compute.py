"""ComputeResource: the facade users call. ``mode`` picks where the payload runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_hpc.backends.base import Backend
from dagster_hpc.backends.local import LocalBackend
from dagster_hpc.errors import ConfigError
from dagster_hpc.execution import AnyContext, execute
from dagster_hpc.launchers import Launcher
from dagster_hpc.request import Payload, build_request


class ComputeResource(dg.ConfigurableResource):
    """Run a payload (Python file, shell script or argv list) through Dagster Pipes.

    ``mode="local"`` runs it as a local subprocess; ``mode="slurm"`` submits the very same job
    script to a Slurm cluster. Immutable like every Dagster resource: per-run state lives in
    the backend object each ``run()`` creates.
    """

    mode: str = "local"
    base_dir: str | None = None  # local mode: where run directories go (default: per-user tmp)
    python: str | None = None  # interpreter for Python payloads (local default: this Python)
    extra_env: dict[str, str] = {}  # environment for every payload; per-call extra_env wins

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
    ) -> dg.PipesClientCompletedInvocation:
        """Run ``payload`` and wait; ``yield from compute.run(...).get_results()`` in an asset.

        Everything is validated before anything runs (ConfigError). A payload that fails
        raises PayloadError with its exit code and the last lines of its stderr.
        """
        backend = make_backend(self)
        request = build_request(
            payload,
            launcher=launcher,
            args=args,
            extra_env=extra_env,
            extras=extras,
            extra_files=extra_files,
            queue=queue,
        )
        request, header_lines = backend.prepare(context, request)
        return execute(
            context, backend, request, python=self.python, base_env=dict(self.extra_env), header_lines=header_lines
        )


def _local_backend(resource: ComputeResource) -> Backend:
    return LocalBackend(resource.base_dir)


# mode -> backend factory. Each mode registers exactly one entry.
BACKEND_FACTORIES: dict[str, Callable[[ComputeResource], Backend]] = {
    "local": _local_backend,
    # --- mode="slurm": the Slurm backend registers its factory here ---
}


def make_backend(resource: ComputeResource) -> Backend:
    """The backend for ``resource.mode``; unknown modes fail before anything runs."""
    factory = BACKEND_FACTORIES.get(resource.mode)
    if factory is None:
        known = ", ".join(sorted(BACKEND_FACTORIES))
        raise ConfigError(
            f"unknown mode {resource.mode!r}: use one of {known} (set it in the resource config or DAGSTER_HPC_MODE)"
        )
    return factory(resource)
