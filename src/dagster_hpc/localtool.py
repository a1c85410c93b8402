"""The one way this library runs a local tool (uv, pip, tar, patchelf, a site's pack command).

Every failure raises with the command, its exit code, the tail of its stderr and a hint, so a
failed environment build says what to run by hand (dask-jobqueue's ``_call`` does the same).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dagster_hpc.errors import ConfigError, EnvBuildError, command_failure_message


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    hint: str = "",
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    error: type[EnvBuildError] = EnvBuildError,
) -> str:
    """Run ``argv`` (no shell), return its stdout; raise ``error`` unless it exits 0.

    A tool that is not installed is a ConfigError (the user installs it; nothing ran).
    """
    command = shlex.join(argv)
    try:
        out = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=None if env is None else dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise error(
            f"timed out after {timeout:.0f} s: {command}" + (f"\nhint: {hint}" if hint else ""),
            command=command,
            stderr=stderr,
            hint=hint,
        ) from exc
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{argv[0]} is not installed ({exc})" + (f"; hint: {hint}" if hint else "")
        ) from exc
    if out.returncode != 0:
        raise error(
            command_failure_message(command, out.returncode, out.stderr, hint),
            command=command,
            exit_code=out.returncode,
            stderr=out.stderr,
            hint=hint,
        )
    return out.stdout
