"""``EnvConfig``: which environment Slurm jobs run in (Dagster config, immutable).

Either ``lock`` (build from a uv.lock / requirements file, ship once, cache by content) or
``path`` (a pre-deployed environment on the cluster, verified before submitting). Set it on
``SlurmResource(env=EnvConfig(...))`` or through ``DAGSTER_HPC_ENV_*`` variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from dagster_hpc._strict import StrictConfig, refuse_unknown_env
from dagster_hpc.envs.build import EnvSpec
from dagster_hpc.envs.key import BUNDLE_KINDS, SELF_CONTAINED
from dagster_hpc.envs.predeployed import PredeployedEnv
from dagster_hpc.errors import ConfigError
from dagster_hpc.settings import env_names, read_env

DEFAULT_ENV_PREFIX = "DAGSTER_HPC_ENV"
# {prefix}_{suffix} -> EnvConfig field (strings)
ENV_FIELDS: dict[str, str] = env_names(
    ("lock", "kind", "path", "python", "python_home", "remote_base", "install_on")
)


BundleKind = Literal["self-contained", "wheelhouse", "pack"]
InstallOn = Literal["auto", "login", "compute"]


class EnvConfig(StrictConfig):
    """The payload environment on the cluster: built from a lock, or pre-deployed."""

    lock: str | None = Field(
        default=None,
        description="uv.lock (pyproject.toml beside it) or requirements.txt to build the env from.",
    )
    kind: BundleKind = Field(
        default=SELF_CONTAINED,
        description="Bundle kind: self-contained (ships its own Python), wheelhouse (installs offline "
        "with a shipped uv into the nodes' Python) or pack (pack_command, e.g. pixi-pack).",
    )
    path: str | None = Field(
        default=None, description="Pre-deployed environment on the cluster (used as is, verified)."
    )
    python: str | None = Field(
        default=None,
        description="Interpreter inside the pre-deployed path, when not bin/python, env/bin/python or venv/bin/python.",
    )
    python_version: str | None = Field(
        default=None,
        description="Python minor for wheelhouse/pack bundles (default: what the compute nodes have).",
    )
    python_home: str | None = Field(
        default=None,
        description="CPython installation copied into self-contained bundles (default: this Python's).",
    )
    extra_packages: list[str] | None = Field(
        default=None,
        description="Installed on top of the lock when it does not pin them (default: dagster-pipes).",
    )
    pack_command: list[str] = Field(
        default_factory=list,
        description="kind=pack: argv with {project}, {lock}, {output} placeholders.",
    )
    pack_python: str = Field(
        default="env/bin/python", description="kind=pack: interpreter inside the unpacked bundle."
    )
    install_on: InstallOn = Field(
        default="auto",
        description="Where wheelhouse/pack installs run: login, compute (srun), or auto (compute only "
        "when the login node's CPU architecture differs from the compute nodes').",
    )
    remote_base: str | None = Field(
        default=None,
        description="Cache root on the cluster (envs/ goes below it); default: beside the run directories.",
    )

    def check(self) -> None:
        """ConfigError unless exactly one of lock/path is set and the kind is known."""
        if bool(self.lock) == bool(self.path):
            raise ConfigError(
                "EnvConfig needs exactly one of lock= (build from a uv.lock/requirements file) or "
                f"path= (pre-deployed on the cluster); got lock={self.lock!r}, path={self.path!r}"
            )
        if self.kind not in BUNDLE_KINDS:
            raise ConfigError(
                f"unknown env kind {self.kind!r}: use one of {', '.join(BUNDLE_KINDS)}"
            )
        if self.install_on not in ("auto", "login", "compute"):
            raise ConfigError(f"env install_on={self.install_on!r}: use auto, login or compute")
        if self.lock and not Path(self.lock).is_file():
            raise ConfigError(
                f"env lock file {self.lock} does not exist (EnvConfig.lock); run `uv lock` in the project"
            )

    def spec(self) -> EnvSpec:
        self.check()
        assert self.lock is not None
        return EnvSpec(
            lock=Path(self.lock),
            kind=self.kind,
            extra_packages=None if self.extra_packages is None else tuple(self.extra_packages),
            python_home=Path(self.python_home) if self.python_home else None,
            pack_command=tuple(self.pack_command),
            pack_python=self.pack_python,
        )

    def predeployed(self) -> PredeployedEnv:
        self.check()
        assert self.path is not None
        return PredeployedEnv(self.path, self.python)

    @classmethod
    def from_env(cls, prefix: str = DEFAULT_ENV_PREFIX) -> EnvConfig | None:
        """From ``{prefix}_LOCK`` or ``{prefix}_PATH`` (+ ``_KIND``, ``_PYTHON``, ...); None if neither is set."""
        refuse_unknown_env(prefix, ENV_FIELDS)
        values = {field: raw for field, (_name, raw) in read_env(prefix, ENV_FIELDS).items()}
        if not values.get("lock") and not values.get("path"):
            return None
        cfg = cls(**values)
        cfg.check()
        return cfg
