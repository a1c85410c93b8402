"""Shell payloads: run a script with bash, or any executable file / command directly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import Launcher, LaunchRequest, quote_all


@dataclass(frozen=True)
class BashLauncher(Launcher):
    """Run a shell script with ``bash`` (the script needs no executable bit)."""

    shell: str = "bash"
    name: ClassVar[str] = "bash"

    def render(self, request: LaunchRequest) -> str:
        if request.payload is None:
            raise ConfigError(
                "BashLauncher runs a script file; for a command (argv list) use ExecLauncher"
            )
        line = f"exec {quote_all([self.shell])} {request.payload_ref()}"
        if request.args:
            line += " " + quote_all(request.args)
        return self._header() + line + "\n"


@dataclass(frozen=True)
class ExecLauncher(Launcher):
    """Run an executable payload file (its shebang decides the interpreter) or an argv command."""

    name: ClassVar[str] = "exec"

    def render(self, request: LaunchRequest) -> str:
        if request.payload is not None:
            words = request.payload_ref()
            if request.args:
                words += " " + quote_all(request.args)
        else:
            words = quote_all(request.argv + request.args)
        return self._header() + f"exec {words}\n"

    def check_payload(self, payload: Path) -> None:
        if not os.access(payload, os.X_OK):
            raise ConfigError(
                f"payload {payload} is not executable, and ExecLauncher runs it directly: "
                f"`chmod +x {payload}`, or pass launcher=BashLauncher() / PythonLauncher()"
            )
