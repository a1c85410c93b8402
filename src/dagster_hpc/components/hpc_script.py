"""``HpcScriptComponent``: a payload that runs through ``ComputeResource``, declared in YAML.

Built on Dagster's own ``PythonScriptComponent`` (same ``execution`` block: the payload's path
relative to the component's folder, and its args; same ``assets`` / ``checks`` specs), plus what
decides where and how it runs::

    type: dagster_hpc.components.HpcScriptComponent
    attributes:
      execution:
        path: payload.py          # the payload: .py, shell script, or any executable
        args: ["--limit", "1000"]
      mode: slurm                 # local | slurm; omitted: $DAGSTER_HPC_MODE (default local)
      queue: {partition: gpu, gpus_per_node: 1, time_limit: "01:00:00"}
      launcher: {kind: torchrun, options: {nproc_per_node: 4}}
      extras: {threshold: 0.5}
      assets:
        - key: features

The cluster settings come from the environment (``SlurmResource.from_env()``), as for
``ComputeResource(mode="slurm")``. In slurm mode the assets get the ``slurm`` kind and
partition/QOS tags (``dagster_hpc.kinds``). Bad values fail when the definitions load.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

from dagster_hpc.errors import ConfigError
from dagster_hpc.kinds import hpc_kinds, hpc_tags, resolve_mode

# QueueConfig fields that are text in Slurm's syntax but may arrive from YAML as numbers.
_TEXT_QUEUE_FIELDS = ("time_limit", "mem", "mem_per_cpu")


class LauncherModel(BaseModel):
    """``launcher:`` in defs.yaml: which launcher and its options (the dataclass's fields)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["python", "bash", "exec", "srun", "torchrun", "ray"] = Field(
        description="python, bash, exec, srun, torchrun or ray (see the Launchers page)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the launcher class."
    )

    def build(self) -> Any:
        from dagster_hpc import launchers

        cls = {
            "python": launchers.PythonLauncher,
            "bash": launchers.BashLauncher,
            "exec": launchers.ExecLauncher,
            "srun": launchers.SrunLauncher,
            "torchrun": launchers.TorchrunLauncher,
            "ray": launchers.RayLauncher,
        }[self.kind]
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigError(f"launcher {self.kind}: {exc}") from None


class HpcScriptScaffolder(dg.Scaffolder):
    """``dg scaffold defs dagster_hpc.components.HpcScriptComponent NAME``: a defs.yaml and a
    payload that reports one materialization."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name
        dg.scaffold_component(
            request,
            {
                "execution": {"path": "payload.py"},
                "queue": {"time_limit": "00:30:00", "mem": "2G"},
                "assets": [{"key": name}],
            },
        )
        payload = request.target_path / "payload.py"
        if not payload.exists():
            payload.write_text(PAYLOAD_TEMPLATE)


PAYLOAD_TEMPLATE = '''"""The payload: runs where the component's mode says (this machine or a Slurm job)."""

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.log.info(f"hello from {pipes.asset_key}")
    pipes.report_asset_materialization(metadata={"rows": 0})
'''


@dg.scaffold_with(HpcScriptScaffolder)
class HpcScriptComponent(dg.PythonScriptComponent):
    """A payload run through dagster-hpc's ComputeResource: locally or as a Slurm job."""

    mode: Literal["local", "slurm"] | None = Field(
        default=None, description="local or slurm; omitted: $DAGSTER_HPC_MODE (default local)."
    )
    queue: dict[str, Any] | None = Field(
        default=None, description="QueueConfig fields for these jobs (merged over the site's)."
    )
    launcher: LauncherModel | None = Field(
        default=None, description="How processes start (default: by the payload's suffix)."
    )
    extras: dict[str, Any] = Field(
        default_factory=dict, description="Delivered to the payload as pipes.extras."
    )
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="Environment of the payload (never in the job script)."
    )
    keep_run_dirs: Literal["failed", "always", "never"] = Field(
        default="failed", description="Run directories after a step (see ComputeResource)."
    )
    resource_key: str | None = Field(
        default=None,
        description="Use the project's ComputeResource under this resource key instead of one "
        "built from mode + the environment (its mode must match for the kinds to be right).",
    )

    @property
    def slurm_queue(self) -> dict[str, Any] | None:
        """``queue`` as QueueConfig takes it: YAML and Dagster's templating turn ``time_limit: 30``
        or ``mem: 512`` into numbers, which mean minutes / MB as in Slurm."""
        if self.queue is None:
            return None
        return {
            k: str(v) if k in _TEXT_QUEUE_FIELDS and isinstance(v, int) else v
            for k, v in self.queue.items()
        }

    @property
    def resource_keys(self) -> set[str]:
        return {self.resource_key} if self.resource_key else set()

    def compute(self, context: Any = None) -> Any:
        """The resource that runs the payload: the project's (resource_key) or our own."""
        if self.resource_key and context is not None:
            return getattr(context.resources, self.resource_key)
        from dagster_hpc.compute import ComputeResource

        return ComputeResource(
            mode=self.mode or resolve_mode(None), keep_run_dirs=self.keep_run_dirs
        )

    def build_underlying_assets_def(self, component_load_context: dg.ComponentLoadContext):
        from dagster_hpc.queue import QueueConfig

        QueueConfig.from_mapping(self.slurm_queue)  # a bad queue fails at load, not at 3 a.m.
        if self.launcher is not None:
            self.launcher.build()
        compute = self.compute()
        kinds, tags = hpc_kinds(compute), hpc_tags(compute, self.slurm_queue)
        specs = [s.merge_attributes(kinds=kinds, tags=tags) for s in (self.assets or [])]
        tagged = self.model_copy(update={"assets": specs or self.assets})
        return super(HpcScriptComponent, tagged).build_underlying_assets_def(component_load_context)

    def invoke_execute_fn(self, context: Any, component_load_context: dg.ComponentLoadContext):
        spec = self.execution
        payload = (
            spec.path
            if os.path.isabs(spec.path)
            else os.path.join(component_load_context.path, spec.path)
        )
        args = shlex.split(spec.args) if isinstance(spec.args, str) else list(spec.args or [])
        completed = self.compute(context).run(
            context,
            payload,
            args=args,
            launcher=self.launcher.build() if self.launcher else None,
            queue=self.slurm_queue,
            extras=self.extras,
            extra_env=self.extra_env,
        )
        return list(completed.get_results())
