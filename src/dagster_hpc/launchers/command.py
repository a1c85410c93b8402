"""Shared pieces of the launchers that start a payload under another program (srun, torchrun,
Ray): the payload's own command line, and validation of pass-through srun options."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import LaunchRequest, quote_all
from dagster_hpc.slurm_options import reserved_spelled

# srun options a launcher sets itself, or that would break log streaming / the run directory.
RESERVED_SRUN_OPTIONS = frozenset(
    [
        "--output",
        "-o",
        "--error",
        "-e",
        "--input",
        "-i",
        "--chdir",
        "-D",
        "--jobid",
        "--pty",
        "--unbuffered",
        "-u",
        "--kill-on-bad-exit",
        "-K",
        "--mpi",
    ]
)
# --option or --option=value; values limited to characters that need no quoting, so a
# rendered script shows exactly what srun receives.
_OPTION_RE = re.compile(
    r"^(?P<opt>--[A-Za-z][A-Za-z0-9-]*)(?:=(?P<val>[A-Za-z0-9_.,:+@%/=\[\]-]*))?$"
)
# Prints a free TCP port on the node that runs it (rendezvous / Ray GCS port on the first node).
FREE_PORT_SNIPPET = (
    'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()'
)
# MPI plugin types (srun --mpi=...): pmix, pmix_v4, pmi2, cray_shasta, none ...
_MPI_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def payload_command(request: LaunchRequest) -> str:
    """The payload as one quoted command line: ``.py`` with the interpreter (unbuffered),
    ``.sh``/``.bash`` with bash, any other file directly, an argv command as given."""
    if request.payload is None:
        return quote_all(request.argv + request.args)
    suffix = PurePath(request.payload).suffix.lower()
    if suffix == ".py":
        words = f"{quote_all([request.python])} -u {request.payload_ref()}"
    elif suffix in (".sh", ".bash"):
        words = f"bash {request.payload_ref()}"
    else:
        words = request.payload_ref()
    return words + (" " + quote_all(request.args) if request.args else "")


def check_srun_options(
    owner: str, options: Iterable[str], reserved: Iterable[str] = ()
) -> tuple[str, ...]:
    """``options`` as a tuple, or ConfigError naming the first one that cannot be passed safely."""
    if isinstance(options, str):
        raise ConfigError(
            f"{owner}: srun_options must be a list of options, got the single string {options!r}: "
            'wrap it in a list, e.g. srun_options=["--exclusive"]'
        )
    taken = RESERVED_SRUN_OPTIONS | frozenset(reserved)
    out = []
    for option in options:
        m = _OPTION_RE.match(option) if isinstance(option, str) else None
        if m is None:
            raise ConfigError(
                f"{owner}: srun option {option!r} cannot be passed safely: write it as --option or "
                "--option=value (long form) without spaces, quotes or shell characters, "
                'e.g. "--cpu-bind=cores"'
            )
        if reserved_spelled(m["opt"], taken) is not None:  # --ntask is --ntasks to srun
            raise ConfigError(
                f"{owner}: srun option {option!r} is set by the launcher itself (or would break the "
                f"run directory and log streaming); use the launcher's own field instead"
            )
        out.append(option)
    return tuple(out)


def check_count(owner: str, field: str, value: int | None) -> None:
    """A task/process count: None (inherit) or a positive int (bool is not a count)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{owner}: {field}={value!r} must be a positive whole number (or None to inherit)"
        )


def check_mpi(owner: str, mpi: str | None) -> None:
    if mpi is not None and not (isinstance(mpi, str) and _MPI_RE.match(mpi)):
        raise ConfigError(
            f'{owner}: mpi={mpi!r} is not an srun MPI plugin type: use a name such as "pmix", '
            '"pmi2" or "none" (`srun --mpi=list` shows the ones your site has)'
        )


def check_shell_command(owner: str, field: str, command: str | None) -> None:
    """A site-provided one-line shell command (run with ``bash -c``, passed quoted)."""
    if command is not None and (
        not isinstance(command, str) or not command.strip() or "\n" in command or "\r" in command
    ):
        raise ConfigError(
            f"{owner}: {field}={command!r} must be a one-line shell command that prints an address, "
            'e.g. "hostname -i"'
        )
