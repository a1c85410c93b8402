"""The incremental engine: field-level provenance per sample, ``resolve_update``, stores.

No Dagster import anywhere in this package: it runs on compute nodes. Vocabulary and semantics
follow metaxy (features, fields, ``provenance_by_field``, ``Increment(new, stale, orphaned)``).
"""

from dagster_hpc.incremental.errors import (
    FeatureGraphError,
    HashAlgorithmMismatchError,
    SamplesError,
    StoreError,
)
from dagster_hpc.incremental.feature import (
    CODE_VERSION_BY_FIELD,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    FeatureSpec,
    FieldDep,
    FieldSpec,
)
from dagster_hpc.incremental.graph import FeatureGraph
from dagster_hpc.incremental.provenance import HASH_ALGORITHM, hash_parts
from dagster_hpc.incremental.resolve import (
    CODE_CHANGED_FIELDS,
    DATA_CHANGED_FIELDS,
    STALE_FIELDS,
    STALE_REASON,
    Increment,
)
from dagster_hpc.incremental.store import DeltaStore, InMemoryStore, MetadataStore

__all__ = [
    "CODE_CHANGED_FIELDS",
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
    "Increment",
    "MetadataStore",
    "SamplesError",
    "StoreError",
    "hash_parts",
]
