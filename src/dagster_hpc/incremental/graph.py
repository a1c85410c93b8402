"""The feature graph: every feature, validated together, with field-level lineage resolved.

Validation happens once, on construction, and says exactly what is wrong: a cycle (with its
path), an unknown upstream feature or field, a duplicate key, incompatible id columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from dagster_hpc.incremental.errors import FeatureGraphError
from dagster_hpc.incremental.feature import (
    Aggregation,
    Expansion,
    FeatureDep,
    FeatureSpec,
    FieldSpec,
    Identity,
)

# One upstream field a downstream field reads: (upstream feature key, upstream field key).
FieldRef = tuple[str, str]


class FeatureGraph(Mapping[str, FeatureSpec]):
    """An immutable, validated set of features keyed by feature key."""

    def __init__(self, features: Iterable[FeatureSpec]):
        by_key: dict[str, FeatureSpec] = {}
        for feature in features:
            if not isinstance(feature, FeatureSpec):
                raise FeatureGraphError(f"FeatureGraph takes FeatureSpec objects, got {feature!r}.")
            if feature.key in by_key:
                raise FeatureGraphError(
                    f"duplicate feature key {feature.key!r}: two features share it. "
                    "Give each feature a unique key."
                )
            by_key[feature.key] = feature
        self._features = by_key
        for feature in by_key.values():
            self._check_deps(feature)
        self._order = self._topological_order()
        self._inputs = {key: self._resolve_inputs(f) for key, f in by_key.items()}
        self._keys = {key: self._resolve_key(f) for key, f in by_key.items()}

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> FeatureSpec:
        try:
            return self._features[key]
        except KeyError:
            raise FeatureGraphError(
                f"unknown feature {key!r}; the graph has {sorted(self._features)}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._features)

    # Lineage ----------------------------------------------------------------------------------
    def feature(self, feature: str | FeatureSpec) -> FeatureSpec:
        """The graph's own spec for a key or a spec (a spec not in this graph is an error)."""
        key = feature.key if isinstance(feature, FeatureSpec) else feature
        spec = self[key]
        if isinstance(feature, FeatureSpec) and feature != spec:
            raise FeatureGraphError(
                f"feature {key!r} differs from the one registered in the graph; "
                "build the graph from the specs you resolve."
            )
        return spec

    def upstream(self, feature: str | FeatureSpec) -> tuple[FeatureSpec, ...]:
        return tuple(self[d] for d in self.feature(feature).upstream_keys)

    def downstream(self, feature: str | FeatureSpec) -> tuple[FeatureSpec, ...]:
        key = self.feature(feature).key
        return tuple(self[k] for k in self._order if key in self._features[k].upstream_keys)

    def resolve_key(self, feature: str | FeatureSpec) -> tuple[str, ...]:
        """The columns ``resolve_update`` works on: the id columns, or the parent key ``on`` of
        an expansion (one row per parent in new / stale / failed)."""
        return self._keys[self.feature(feature).key]

    def is_expansion(self, feature: str | FeatureSpec) -> bool:
        spec = self.feature(feature)
        return self.resolve_key(spec) != spec.id_columns

    def lineage_on(self, feature: FeatureSpec, dep: FeatureDep) -> tuple[str, ...]:
        """The columns linking ``feature`` to the upstream of ``dep`` (its lineage's ``on``)."""
        lineage = dep.lineage
        if isinstance(lineage, Identity):
            return feature.id_columns
        if isinstance(lineage, Aggregation):
            return lineage.on or feature.id_columns
        return lineage.on or self[dep.feature].id_columns

    def field_inputs(self, feature: str | FeatureSpec) -> dict[str, tuple[FieldRef, ...]]:
        """For each field, the sorted upstream fields whose data versions go into its provenance."""
        return dict(self._inputs[self.feature(feature).key])

    def upstream_fields(self, feature: str | FeatureSpec) -> tuple[FieldRef, ...]:
        """Every upstream field any field of ``feature`` reads (what must be loaded)."""
        refs = {ref for refs in self.field_inputs(feature).values() for ref in refs}
        return tuple(sorted(refs))

    # Validation -------------------------------------------------------------------------------
    def _check_deps(self, feature: FeatureSpec) -> None:
        for dep in feature.feature_deps:
            if dep.feature not in self._features:
                raise FeatureGraphError(
                    f"feature {feature.key!r} depends on unknown feature {dep.feature!r}; "
                    f"known features: {sorted(self._features)}. Add it to the graph or fix the key."
                )
            self._check_lineage(feature, dep)
        for fld in feature.fields:
            for fdep in fld.deps or ():
                if fdep.feature not in feature.upstream_keys:
                    raise FeatureGraphError(
                        f"field {feature.key}.{fld.key} depends on feature {fdep.feature!r}, "
                        f"which is not among the feature's deps {list(feature.upstream_keys)}. "
                        "Add it to FeatureSpec.deps."
                    )
                up = self._features[fdep.feature]
                for name in fdep.fields or ():
                    if name not in up.field_keys:
                        raise FeatureGraphError(
                            f"field {feature.key}.{fld.key} depends on unknown field "
                            f"{fdep.feature}.{name}; {fdep.feature!r} has fields "
                            f"{list(up.field_keys)}."
                        )

    def _check_lineage(self, feature: FeatureSpec, dep: FeatureDep) -> None:
        up = self._features[dep.feature]
        where = f"feature {feature.key!r} (id columns {list(feature.id_columns)}) depends on {dep.feature!r} (id columns {list(up.id_columns)})"
        down_ids, up_ids = set(feature.id_columns), set(up.id_columns)
        if isinstance(dep.lineage, Identity):
            if down_ids != up_ids:
                raise FeatureGraphError(
                    f"{where} with identity lineage, which needs the same id columns. Use the "
                    "same id columns, or FeatureDep(..., lineage=Aggregation(on=...)) for many -> "
                    "one, or lineage=Expansion(on=...) for one -> many."
                )
            return
        on = set(self.lineage_on(feature, dep))
        if isinstance(dep.lineage, Aggregation):
            if on != down_ids or not on < up_ids:
                raise FeatureGraphError(
                    f"{where} with Aggregation(on={sorted(on)}): `on` must be the downstream's "
                    "id columns and a strict subset of the upstream's."
                )
            return
        if on != up_ids or not on < down_ids:
            raise FeatureGraphError(
                f"{where} with Expansion(on={sorted(on)}): `on` must be the upstream's id columns "
                "(the parent key) and a strict subset of the downstream's."
            )

    def _resolve_key(self, feature: FeatureSpec) -> tuple[str, ...]:
        keys = {}
        for dep in feature.feature_deps:
            on = self.lineage_on(feature, dep)
            key = on if isinstance(dep.lineage, Expansion) else feature.id_columns
            keys[dep.feature] = tuple(c for c in feature.id_columns if c in key)
        if len(set(keys.values())) > 1:
            raise FeatureGraphError(
                f"feature {feature.key!r}: its deps resolve on different keys "
                f"({ {k: list(v) for k, v in keys.items()} }); an expansion's deps must all "
                "link on the same parent key, and cannot be mixed with identity or aggregation."
            )
        return next(iter(keys.values()), feature.id_columns)

    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, str] = {}  # "visiting" | "done"

        def visit(key: str, path: list[str]) -> None:
            if state.get(key) == "done":
                return
            if state.get(key) == "visiting":
                cycle = path[path.index(key) :] + [key]
                raise FeatureGraphError(
                    f"the feature graph has a cycle: {' -> '.join(cycle)}. "
                    "Remove one of these dependencies."
                )
            state[key] = "visiting"
            for dep in self._features[key].upstream_keys:
                visit(dep, path + [key])
            state[key] = "done"
            order.append(key)

        for key in sorted(self._features):
            visit(key, [])
        return tuple(order)

    def _resolve_inputs(self, feature: FeatureSpec) -> dict[str, tuple[FieldRef, ...]]:
        return {fld.key: self._field_refs(feature, fld) for fld in feature.fields}

    def _field_refs(self, feature: FeatureSpec, fld: FieldSpec) -> tuple[FieldRef, ...]:
        if fld.deps is None:
            deps = [(up, self._features[up].field_keys) for up in feature.upstream_keys]
        else:
            deps = [(d.feature, d.fields or self._features[d.feature].field_keys) for d in fld.deps]
        return tuple(sorted({(up, name) for up, names in deps for name in names}))
