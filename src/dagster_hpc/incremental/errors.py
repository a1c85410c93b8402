"""Errors of the incremental engine.

They subclass the package hierarchy in ``dagster_hpc.errors`` (which imports nothing from Dagster),
so a caller can catch ``DagsterHpcError`` everywhere, also on a compute node.
"""

from __future__ import annotations

from dagster_hpc.errors import ConfigError, DagsterHpcError


class FeatureGraphError(ConfigError):
    """A feature or the feature graph is malformed (cycle, unknown feature or field, duplicate key)."""


class SamplesError(ConfigError):
    """Samples handed to ``resolve_update`` or ``write`` do not fit the feature they are for."""


class StoreError(DagsterHpcError):
    """The metadata store could not be read or written."""


class HashAlgorithmMismatchError(StoreError):
    """Stored provenance was computed with another hash algorithm than this version uses."""


class IncrementalWriteError(StoreError):
    """A write finished with failed samples (recorded as failed, not done): how many, which ids."""

    def __init__(self, message: str, *, failed: int, failed_ids: tuple[dict, ...]):
        super().__init__(message)
        self.failed = failed
        self.failed_ids = failed_ids
