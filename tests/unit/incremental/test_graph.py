"""Bad features and graphs are rejected on construction with errors that name the problem."""

from __future__ import annotations

import pytest

from dagster_hpc.incremental import (
    FeatureGraph,
    FeatureGraphError,
    FeatureSpec,
    FieldDep,
    FieldSpec,
)

IDS = ("sample_uid",)


def root(key: str = "a", fields: tuple[str, ...] = ("x",)) -> FeatureSpec:
    return FeatureSpec(key=key, id_columns=IDS, fields=tuple(FieldSpec(f) for f in fields))


def child(key: str, deps: tuple[str, ...], field_deps=None) -> FeatureSpec:
    return FeatureSpec(
        key=key, id_columns=IDS, deps=deps, fields=(FieldSpec("y", deps=field_deps),)
    )


def test_cycle_is_rejected_with_its_path():
    with pytest.raises(FeatureGraphError, match=r"cycle: b -> c -> b|cycle: c -> b -> c"):
        FeatureGraph([root(), child("b", ("a", "c")), child("c", ("b",))])


def test_self_dependency_is_rejected():
    with pytest.raises(FeatureGraphError, match="cannot depend on itself"):
        child("b", ("b",))


def test_unknown_upstream_feature():
    with pytest.raises(FeatureGraphError, match="depends on unknown feature 'nope'"):
        FeatureGraph([root(), child("b", ("nope",))])


def test_unknown_upstream_field():
    with pytest.raises(FeatureGraphError, match=r"unknown field a\.zz"):
        FeatureGraph([root(), child("b", ("a",), (FieldDep("a", ("zz",)),))])


def test_field_dep_on_feature_outside_deps():
    with pytest.raises(FeatureGraphError, match="not among the feature's deps"):
        FeatureGraph([root(), root("r2"), child("b", ("a",), (FieldDep("r2"),))])


def test_duplicate_feature_key():
    with pytest.raises(FeatureGraphError, match="duplicate feature key 'a'"):
        FeatureGraph([root(), root()])


def test_duplicate_field_key():
    with pytest.raises(FeatureGraphError, match=r"duplicate field key\(s\) \['x'\]"):
        root(fields=("x", "x"))


def test_mismatched_id_columns():
    other = FeatureSpec(key="b", id_columns=("video_id",), deps=("a",), fields=(FieldSpec("y"),))
    with pytest.raises(
        FeatureGraphError, match="with identity lineage, which needs the same id columns"
    ):
        FeatureGraph([root(), other])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id_columns": ()}, "at least one id column"),
        ({"id_columns": "sample_uid"}, "must be a tuple"),
        ({"id_columns": ("bad name",)}, "not a plain identifier"),
        ({"id_columns": ("provenance",)}, "reserved by the engine"),
        ({"fields": ()}, "at least one field"),
        ({"key": "9lives"}, "key is not valid"),
    ],
)
def test_bad_feature_specs(kwargs, message):
    base = {"key": "a", "id_columns": IDS, "fields": (FieldSpec("x"),)}
    with pytest.raises(FeatureGraphError, match=message):
        FeatureSpec(**{**base, **kwargs})


def test_bad_field_specs():
    with pytest.raises(FeatureGraphError, match="code_version must be a non-empty string"):
        FieldSpec("x", code_version=2)  # type: ignore[arg-type]
    with pytest.raises(FeatureGraphError, match="fields must be a tuple"):
        FieldDep("a", "x")  # type: ignore[arg-type]


def test_field_inputs_resolve_defaults_and_narrowing():
    graph = FeatureGraph(
        [
            root("a", ("x", "z")),
            FeatureSpec(
                key="b",
                id_columns=IDS,
                deps=("a",),
                fields=(FieldSpec("all"), FieldSpec("narrow", deps=(FieldDep("a", ("z",)),))),
            ),
        ]
    )
    assert graph.field_inputs("b") == {
        "all": (("a", "x"), ("a", "z")),
        "narrow": (("a", "z"),),
    }
    assert list(graph) == ["a", "b"]
    assert [f.key for f in graph.downstream("a")] == ["b"]
