"""Metadata stores: Delta Lake for real use, in-memory for tests."""

from dagster_hpc.incremental.store.base import MetadataStore
from dagster_hpc.incremental.store.delta import DeltaStore
from dagster_hpc.incremental.store.memory import InMemoryStore

__all__ = ["DeltaStore", "InMemoryStore", "MetadataStore"]
