"""Dagster Pipes over a Transport: a context file in the run dir + a tailing message reader."""

from dagster_hpc.pipes.context import RunDirContextInjector
from dagster_hpc.pipes.reader import RunDirMessageReader
from dagster_hpc.pipes.tail import FileTail

__all__ = ["FileTail", "RunDirContextInjector", "RunDirMessageReader"]
