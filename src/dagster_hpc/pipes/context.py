"""Pipes context injection through a file in the run directory (shipped with the job)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_pipes import PipesContextData, PipesParams


class RunDirContextInjector(dg.PipesContextInjector):
    """Write the Pipes context to ``local_path``; the payload reads it at ``remote_path``.

    For local mode both paths are the same file; for Slurm the run directory is staged to the
    cluster after injection, before submission, so the file is there when the job starts.
    """

    def __init__(self, local_path: Path, remote_path: str):
        self._local_path = Path(local_path)
        self._remote_path = remote_path

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        fd = os.open(self._local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(context_data, fh)
        yield {"path": self._remote_path}

    def no_messages_debug_text(self) -> str:
        return (
            f"The Pipes context was written to {self._remote_path} (the run directory). "
            "The payload loads it with dagster_pipes.open_dagster_pipes(); if it never did, "
            "check that the payload calls it and that dagster-pipes is installed where it runs."
        )
