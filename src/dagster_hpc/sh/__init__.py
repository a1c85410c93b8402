"""Shell programs longer than a line, as package data ``.sh`` files that take their values as
arguments (shellchecked by scripts/lint, their commands golden-tested).

``command(name, *words)`` is the one-line remote command that runs ``name``:
``sh -c '<program>' <name> WORD...``. Each word is a shell word the caller already quoted
(``shlex.quote``) or a quoted expression such as ``"$HOME"/'.dagster-hpc'`` that the remote
shell expands before the program starts. Comment lines are for readers of the file and are
not sent.
"""

from __future__ import annotations

import shlex
from functools import cache
from importlib import resources


@cache
def program(name: str) -> str:
    """The program ``name`` (e.g. ``"runs_gc_list.sh"``) without comment or blank lines."""
    text = resources.files(__name__).joinpath(name).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(lines) + "\n"


def command(name: str, *words: str) -> str:
    """``sh -c <program> <name> WORD...``: the words become $1, $2, ... of the program."""
    return " ".join(["sh", "-c", shlex.quote(program(name)), shlex.quote(name), *words])
