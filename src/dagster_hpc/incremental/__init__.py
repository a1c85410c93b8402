"""The incremental engine: field-level provenance per sample, ``resolve_update``, stores.

No Dagster import anywhere in this package: it runs on compute nodes. Vocabulary and semantics
follow metaxy (features, fields, ``provenance_by_field``, ``Increment(new, stale, orphaned)``).
"""

from dagster_hpc.incremental.errors import (
    FeatureGraphError,
    HashAlgorithmMismatchError,
    IncrementalWriteError,
    SamplesError,
    StoreError,
)
from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    Aggregation,
    Expansion,
    FeatureDep,
    FeatureSpec,
    FieldDep,
    FieldSpec,
    Identity,
)
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.provenance import HASH_ALGORITHM, hash_parts
from dagster_hpc.incremental.resolve import (
    CODE_CHANGED_FIELDS,
    DATA_CHANGED_FIELDS,
    FAILURES,
    LAST_ERROR,
    REASON_FAILED,
    REASON_PREDICATE,
    STALE_FIELDS,
    STALE_REASON,
    Increment,
)
from dagster_hpc.incremental.store import DeltaStore, InMemoryStore, MetadataStore
from dagster_hpc.incremental.store.base import ERROR, WriteSummary

__all__ = [
    "CODE_CHANGED_FIELDS",
    "ERROR",
    "FAILURES",
    "LAST_ERROR",
    "REASON_FAILED",
    "REASON_PREDICATE",
    "Aggregation",
    "Expansion",
    "FeatureDep",
    "Identity",
    "WriteSummary",
    "CODE_VERSION_BY_FIELD",
    "DATA_CHANGED_FIELDS",
    "DATA_VERSION",
    "DATA_VERSION_BY_FIELD",
    "HASH_ALGORITHM",
    "PROVENANCE",
    "PROVENANCE_BY_FIELD",
    "STALE_FIELDS",
    "STALE_REASON",
    "DeltaStore",
    "FeatureGraph",
    "FeatureGraphError",
    "FeatureSpec",
    "FieldDep",
    "FieldSpec",
    "HashAlgorithmMismatchError",
    "InMemoryStore",
    "IncrementalWriteError",
    "Increment",
    "MetadataStore",
    "SamplesError",
    "StoreError",
    "hash_parts",
]
