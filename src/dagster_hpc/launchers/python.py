"""Python payloads: a script file run by the job's interpreter, unbuffered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import Launcher, LaunchRequest, quote_all


@dataclass(frozen=True)
class PythonLauncher(Launcher):
    """Run a Python file with ``python`` (default: the interpreter the backend chose).

    ``-u`` keeps stdout unbuffered even if a site's profile unsets PYTHONUNBUFFERED, so log
    lines reach Dagster as they are printed.
    """

    python: str | None = None
    name: ClassVar[str] = "python"

    def render(self, request: LaunchRequest) -> str:
        if request.payload is None:
            raise ConfigError(
                "PythonLauncher runs a .py file; for a command (argv list) use ExecLauncher"
            )
        interpreter = self.python or request.python
        line = f"exec {quote_all([interpreter])} -u {request.payload_ref()}"
        if request.args:
            line += " " + quote_all(request.args)
        return self._header() + line + "\n"
