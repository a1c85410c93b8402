"""Features, their fields and field-level dependencies (metaxy's vocabulary).

A *feature* is a table of samples keyed by id columns. It declares *fields*; each field has a
code version and depends on fields of upstream features. Everything here is an immutable value
checked on construction, so a typo fails where it was written, not in the middle of a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from dagster_hpc.incremental.errors import FeatureGraphError

# Column names the engine owns. A feature may not use them as id columns or field keys.
PROVENANCE_BY_FIELD = "provenance_by_field"
PROVENANCE = "provenance"
DATA_VERSION_BY_FIELD = "data_version_by_field"
DATA_VERSION = "data_version"
CODE_VERSION_BY_FIELD = "code_version_by_field"
RESERVED_COLUMNS = frozenset(
    {PROVENANCE_BY_FIELD, PROVENANCE, DATA_VERSION_BY_FIELD, DATA_VERSION, CODE_VERSION_BY_FIELD}
)

# Identifiers end up in Delta merge predicates and struct field names: keep them plain.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Feature keys may be namespaced ("video/crops"); each part is an identifier.
_FEATURE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def _check_identifier(kind: str, value: str, where: str) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise FeatureGraphError(
            f"{where}: {kind} {value!r} is not a plain identifier "
            "(letters, digits, underscore; not starting with a digit). Rename it."
        )
    if value in RESERVED_COLUMNS:
        raise FeatureGraphError(
            f"{where}: {kind} {value!r} is reserved by the engine "
            f"({', '.join(sorted(RESERVED_COLUMNS))}). Pick another name."
        )


@dataclass(frozen=True)
class FieldDep:
    """A dependency on fields of one upstream feature; ``fields=None`` means all of its fields."""

    feature: str
    fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not _FEATURE_KEY.match(self.feature):
            raise FeatureGraphError(
                f"FieldDep: feature key {self.feature!r} is not valid "
                "(identifiers separated by '/', e.g. 'video/crops')."
            )
        if self.fields is not None:
            if isinstance(self.fields, str) or not isinstance(self.fields, tuple):
                raise FeatureGraphError(
                    f"FieldDep({self.feature!r}): fields must be a tuple of field keys, "
                    f"got {self.fields!r}; write fields=({self.fields!r},) for one field."
                )
            for name in self.fields:
                _check_identifier("field", name, f"FieldDep({self.feature!r})")
            if len(set(self.fields)) != len(self.fields):
                raise FeatureGraphError(
                    f"FieldDep({self.feature!r}): duplicate field in {self.fields!r}."
                )


def _check_on(kind: str, on: Sequence[str] | None) -> tuple[str, ...] | None:
    if on is None:
        return None
    if isinstance(on, str) or not isinstance(on, tuple | list) or not on:
        raise FeatureGraphError(
            f"{kind}(on=...): give a non-empty tuple of id columns, got {on!r}; "
            f"write on=({on!r},) for one column."
        )
    for col in on:
        _check_identifier("id column", col, f"{kind}(on=...)")
    return tuple(on)


@dataclass(frozen=True)
class Identity:
    """One upstream sample per downstream sample, on the same id columns (the default)."""


@dataclass(frozen=True)
class Aggregation:
    """Many upstream samples -> one: the downstream id columns ``on`` group the upstream's.

    ``on=None`` means the downstream feature's id columns; they must be a strict subset of the
    upstream's id columns.
    """

    on: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", _check_on("Aggregation", self.on))


@dataclass(frozen=True)
class Expansion:
    """One upstream sample -> many: the downstream ids extend the parent key ``on``.

    ``on=None`` means the upstream feature's id columns; they must be a strict subset of the
    downstream's id columns.
    """

    on: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", _check_on("Expansion", self.on))


Lineage = Identity | Aggregation | Expansion


@dataclass(frozen=True, eq=False)
class FeatureDep:
    """A dependency on one upstream feature: its lineage, whether optional, its filters.

    ``filters`` are polars expressions on the upstream's id and user columns, applied before the
    join. ``optional=True`` left-joins the upstream: a missing sample contributes a fixed null.
    """

    feature: str
    lineage: Lineage = Identity()
    optional: bool = False
    filters: tuple[pl.Expr, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not _FEATURE_KEY.match(self.feature):
            raise FeatureGraphError(
                f"FeatureDep: feature key {self.feature!r} is not valid "
                "(identifiers separated by '/', e.g. 'video/crops')."
            )
        if not isinstance(self.lineage, Identity | Aggregation | Expansion):
            raise FeatureGraphError(
                f"FeatureDep({self.feature!r}): lineage must be Identity(), Aggregation(on=...) "
                f"or Expansion(on=...), got {self.lineage!r}."
            )
        if not isinstance(self.optional, bool):
            raise FeatureGraphError(
                f"FeatureDep({self.feature!r}): optional must be True or False, "
                f"got {self.optional!r}."
            )
        filters = self.filters
        if isinstance(filters, pl.Expr):
            filters = (filters,)
        if not isinstance(filters, tuple | list) or not all(
            isinstance(f, pl.Expr) for f in filters
        ):
            raise FeatureGraphError(
                f"FeatureDep({self.feature!r}): filters must be polars expressions, "
                f"e.g. (pl.col('lang') == 'en',), got {self.filters!r}."
            )
        object.__setattr__(self, "filters", tuple(filters))

    def _identity(self) -> tuple:
        # polars expressions do not compare with ==; their serialised plan does.
        return (
            self.feature,
            self.lineage,
            self.optional,
            tuple(f.meta.serialize(format="json") for f in self.filters),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureDep) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


@dataclass(frozen=True)
class FieldSpec:
    """One field of a feature.

    ``deps=None`` (the default) means: every field of every upstream feature, which is the safe
    choice. Narrow it with explicit ``FieldDep``s so that a change elsewhere upstream leaves this
    field up to date; ``deps=()`` means the field depends on nothing but its code version.
    """

    key: str
    code_version: str = "1"
    deps: tuple[FieldDep, ...] | None = None

    def __post_init__(self) -> None:
        _check_identifier("field key", self.key, "FieldSpec")
        if not isinstance(self.code_version, str) or not self.code_version:
            raise FeatureGraphError(
                f"FieldSpec({self.key!r}): code_version must be a non-empty string, "
                f"got {self.code_version!r} (e.g. code_version='2')."
            )
        if self.deps is not None:
            if not isinstance(self.deps, tuple) or not all(
                isinstance(d, FieldDep) for d in self.deps
            ):
                raise FeatureGraphError(
                    f"FieldSpec({self.key!r}): deps must be a tuple of FieldDep, got {self.deps!r}."
                )


@dataclass(frozen=True)
class FeatureSpec:
    """A feature: a table of samples keyed by ``id_columns``, with fields and upstream features."""

    key: str
    id_columns: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    deps: tuple[str | FeatureDep, ...] = ()

    def __post_init__(self) -> None:
        where = f"FeatureSpec({self.key!r})"
        if not isinstance(self.key, str) or not _FEATURE_KEY.match(self.key):
            raise FeatureGraphError(
                f"{where}: the key is not valid (identifiers separated by '/', e.g. 'video/crops')."
            )
        for attr in ("id_columns", "fields", "deps"):
            value = getattr(self, attr)
            if isinstance(value, str) or not isinstance(value, tuple):
                raise FeatureGraphError(
                    f"{where}: {attr} must be a tuple, got {value!r}; "
                    f"write {attr}=({value!r},) for a single item."
                )
        if not self.id_columns:
            raise FeatureGraphError(
                f"{where}: needs at least one id column (e.g. ('sample_uid',))."
            )
        for col in self.id_columns:
            _check_identifier("id column", col, where)
        if len(set(self.id_columns)) != len(self.id_columns):
            raise FeatureGraphError(f"{where}: duplicate id column in {self.id_columns!r}.")
        if not self.fields:
            raise FeatureGraphError(f"{where}: declare at least one field.")
        if not all(isinstance(f, FieldSpec) for f in self.fields):
            raise FeatureGraphError(f"{where}: fields must be FieldSpec instances.")
        keys = [f.key for f in self.fields]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise FeatureGraphError(
                f"{where}: duplicate field key(s) {dupes}. Field keys must be unique."
            )
        clash = sorted(set(keys) & set(self.id_columns))
        if clash:
            raise FeatureGraphError(
                f"{where}: field key(s) {clash} are also id columns. Rename one."
            )
        for dep in self.deps:
            if isinstance(dep, FeatureDep):
                continue
            if not isinstance(dep, str) or not _FEATURE_KEY.match(dep):
                raise FeatureGraphError(
                    f"{where}: upstream {dep!r} is not valid: give a feature key or a FeatureDep."
                )
        keys = self.upstream_keys
        if len(set(keys)) != len(keys):
            raise FeatureGraphError(f"{where}: duplicate upstream feature in deps {list(keys)}.")
        if self.key in keys:
            raise FeatureGraphError(f"{where}: a feature cannot depend on itself.")

    @property
    def feature_deps(self) -> tuple[FeatureDep, ...]:
        """Every dependency as a FeatureDep (a plain key is an identity, required, unfiltered)."""
        return tuple(d if isinstance(d, FeatureDep) else FeatureDep(d) for d in self.deps)

    @property
    def upstream_keys(self) -> tuple[str, ...]:
        """The keys of the upstream features, in declaration order."""
        return tuple(d.feature if isinstance(d, FeatureDep) else d for d in self.deps)

    @property
    def is_root(self) -> bool:
        """A root feature has no upstream: its provenance comes from the caller's ``samples=``."""
        return not self.deps

    @property
    def field_keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def field(self, key: str) -> FieldSpec:
        for f in self.fields:
            if f.key == key:
                return f
        raise FeatureGraphError(
            f"feature {self.key!r} has no field {key!r}; its fields are {list(self.field_keys)}."
        )
