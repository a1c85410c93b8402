"""Validate what a user passed to ``ComputeResource.run`` BEFORE anything runs or is submitted."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_hpc.errors import ConfigError
from dagster_hpc.jobscript import validate_env_name
from dagster_hpc.launchers import Launcher, LaunchRequest, default_launcher_for
from dagster_hpc.rundir import RESERVED_NAMES

Payload = str | Path | Sequence[str]


@dataclass(frozen=True)
class JobRequest:
    """A validated ``run()`` call: files to ship, how to launch, what the job sees."""

    launcher: Launcher
    payload_file: Path | None = None
    argv: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    extra_files: tuple[Path, ...] = ()
    queue: Any = None  # backend-specific resource request (QueueConfig for Slurm)

    def launch_request(self, python: str) -> LaunchRequest:
        payload = self.payload_file.name if self.payload_file else None
        return LaunchRequest(payload=payload, argv=self.argv, args=self.args, python=python)

    def describe(self) -> str:
        return str(self.payload_file) if self.payload_file else " ".join(self.argv)


def build_request(
    payload: Payload,
    *,
    launcher: Launcher | None = None,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    extra_files: Sequence[str | Path] = (),
    queue: Any = None,
) -> JobRequest:
    payload_file, argv = _payload(payload)
    if launcher is None:
        launcher = default_launcher_for(payload_file)
    elif not isinstance(launcher, Launcher):
        raise ConfigError(
            f"launcher must be a dagster_hpc launcher (e.g. BashLauncher(), PythonLauncher()), got {launcher!r}"
        )
    if payload_file is not None:
        launcher.check_payload(payload_file)
    files = _extra_files(extra_files, payload_file)
    return JobRequest(
        launcher=launcher,
        payload_file=payload_file,
        argv=argv,
        args=_strings("args", args),
        extra_env=_env(extra_env or {}),
        extras=_extras(extras or {}),
        extra_files=files,
        queue=queue,
    )


def _payload(payload: Payload) -> tuple[Path | None, tuple[str, ...]]:
    if isinstance(payload, str | Path):
        path = Path(payload).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"payload {str(payload)!r} is not a file (resolved to {path.absolute()}): "
                "pass the path of a Python file or shell script, or an argv list such as ['echo', 'hi']"
            )
        if path.name in RESERVED_NAMES:
            raise ConfigError(
                f"payload file name {path.name!r} is reserved in the run directory: rename it"
            )
        return path.absolute(), ()
    if isinstance(payload, Sequence) and payload:
        return None, _strings("payload argv", payload)
    raise ConfigError(
        f"payload must be a file path or a non-empty argv list of strings, got {payload!r}"
    )


def _strings(what: str, values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str | bytes):
        raise ConfigError(
            f"{what} must be a list of strings, got the single string {values!r}: wrap it in a list"
        )
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ConfigError(
            f"{what} must all be strings; these are not: {bad!r} (convert them with str())"
        )
    for v in values:
        _refuse_nul(what, v)
    return tuple(values)


def _refuse_nul(what: str, value: str) -> None:
    # a C string ends at NUL: the shell and execve would silently cut the value there
    if "\0" in value:
        raise ConfigError(
            f"{what} value {value!r} contains a NUL byte, which no process argument or environment "
            "variable can carry (it would be cut short there): remove it"
        )


def _env(env: Mapping[str, str], what: str = "extra_env") -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise ConfigError(f"{what} must be a mapping of names to strings, got {type(env).__name__}")
    for name, value in env.items():
        validate_env_name(name)
        if not isinstance(value, str):
            raise ConfigError(
                f"{what}[{name!r}] must be a string, got {type(value).__name__} {value!r}: "
                f"pass str({value!r}) if that is what you mean"
            )
        _refuse_nul(f"{what}[{name!r}]", value)
    return dict(env)


def check_env(env: Mapping[str, str], what: str) -> dict[str, str]:
    """An environment mapping validated like ``run(extra_env=...)`` (names, strings, no NUL)."""
    return _env(env, what)


def _extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(extras)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"extras must be JSON-serializable (they travel through Pipes): {exc}"
        ) from exc
    return dict(extras)


def _extra_files(extra_files: Sequence[str | Path], payload_file: Path | None) -> tuple[Path, ...]:
    if isinstance(extra_files, str | Path):
        raise ConfigError(
            "extra_files must be a list of paths, got a single path: wrap it in a list"
        )
    taken = {payload_file.name} if payload_file else set()
    files: list[Path] = []
    for item in extra_files:
        path = Path(item).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"extra file {str(item)!r} is not a file (resolved to {path.absolute()})"
            )
        if path.name in RESERVED_NAMES or path.name in taken:
            raise ConfigError(
                f"extra file name {path.name!r} clashes with another file in the run directory: rename it"
            )
        taken.add(path.name)
        files.append(path.absolute())
    return tuple(files)
