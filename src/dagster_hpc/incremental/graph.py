"""The feature graph: every feature, validated together, with field-level lineage resolved.

Validation happens once, on construction, and says exactly what is wrong: a cycle (with its
path), an unknown upstream feature or field, a duplicate key, incompatible id columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from dagster_hpc.incremental.errors import FeatureGraphError
from dagster_hpc.incremental.feature import FeatureSpec, FieldSpec

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
        return tuple(self[d] for d in self.feature(feature).deps)

    def downstream(self, feature: str | FeatureSpec) -> tuple[FeatureSpec, ...]:
        key = self.feature(feature).key
        return tuple(self[k] for k in self._order if key in self._features[k].deps)

    def field_inputs(self, feature: str | FeatureSpec) -> dict[str, tuple[FieldRef, ...]]:
        """For each field, the sorted upstream fields whose data versions go into its provenance."""
        return dict(self._inputs[self.feature(feature).key])

    def upstream_fields(self, feature: str | FeatureSpec) -> tuple[FieldRef, ...]:
        """Every upstream field any field of ``feature`` reads (what must be loaded)."""
        refs = {ref for refs in self.field_inputs(feature).values() for ref in refs}
        return tuple(sorted(refs))

    # Validation -------------------------------------------------------------------------------
    def _check_deps(self, feature: FeatureSpec) -> None:
        for dep in feature.deps:
            if dep not in self._features:
                raise FeatureGraphError(
                    f"feature {feature.key!r} depends on unknown feature {dep!r}; "
                    f"known features: {sorted(self._features)}. Add it to the graph or fix the key."
                )
            up = self._features[dep]
            if set(up.id_columns) != set(feature.id_columns):
                raise FeatureGraphError(
                    f"feature {feature.key!r} (id columns {list(feature.id_columns)}) depends on "
                    f"{dep!r} (id columns {list(up.id_columns)}): only one-to-one lineage on the "
                    "same id columns is supported. Use the same id columns."
                )
        for fld in feature.fields:
            for fdep in fld.deps or ():
                if fdep.feature not in feature.deps:
                    raise FeatureGraphError(
                        f"field {feature.key}.{fld.key} depends on feature {fdep.feature!r}, "
                        f"which is not among the feature's deps {list(feature.deps)}. "
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
            for dep in self._features[key].deps:
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
            deps = [(up, self._features[up].field_keys) for up in feature.deps]
        else:
            deps = [(d.feature, d.fields or self._features[d.feature].field_keys) for d in fld.deps]
        return tuple(sorted({(up, name) for up, names in deps for name in names}))
