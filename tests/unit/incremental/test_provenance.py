"""Provenance semantics: code-version bumps, data-version overrides, a diamond, stable hashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from incremental_demo.features import DERIVED, RAW, ROUND_1, raw_samples
from incremental_demo.run_demo import run_round

from dagster_hpc.incremental import (
    CODE_CHANGED_FIELDS,
    DATA_VERSION_BY_FIELD,
    HASH_ALGORITHM,
    PROVENANCE,
    STALE_FIELDS,
    STALE_REASON,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
    hash_parts,
)
from dagster_hpc.incremental.provenance import fold_hashes, fold_reference, text_hash

IDS = ("sample_uid",)


def test_code_version_bump_marks_only_that_field_stale_for_code(make_store):
    from incremental_demo.features import GRAPH

    store = make_store(GRAPH)
    run_round(store, ROUND_1)
    bumped = FeatureSpec(
        key=DERIVED.key,
        id_columns=DERIVED.id_columns,
        deps=DERIVED.deps,
        fields=(
            FieldSpec("result", code_version="2", deps=(FieldDep(RAW.key, ("value",)),)),
            DERIVED.fields[1],
        ),
    )
    store.graph = FeatureGraph([RAW, bumped])
    inc = store.resolve_update(bumped)
    assert inc.counts() == {"new": 0, "stale": 3, "orphaned": 0, "failed": 0}
    assert inc.stale[STALE_FIELDS].to_list() == [["result"]] * 3
    assert inc.stale[CODE_CHANGED_FIELDS].to_list() == [["result"]] * 3
    assert set(inc.stale[STALE_REASON]) == {"code_changed"}


def _with_content(rows: list[dict], content: dict[str, str]) -> pl.DataFrame:
    """Root samples whose 'value' data version is overridden by a content hash."""
    samples = raw_samples(rows)
    return samples.with_columns(
        pl.struct(pl.col("sample_uid").replace_strict(content).alias("value")).alias(
            DATA_VERSION_BY_FIELD
        )
    )


def test_data_version_override_stops_propagation(make_store):
    from incremental_demo.features import GRAPH

    store = make_store(GRAPH)
    content = {"s1": "sha-aaa", "s2": "sha-bbb", "s3": "sha-ccc"}
    inc = store.resolve_update(RAW, samples=raw_samples(ROUND_1))
    store.write(
        RAW,
        inc.to_process().join(
            _with_content(ROUND_1, content).select("sample_uid", DATA_VERSION_BY_FIELD),
            on="sample_uid",
        ),
    )
    run_round(store, ROUND_1)  # computes derived; raw has nothing new

    # s1's value is re-exported (its provenance changes: 1.0 -> "1.00"), the content is the same.
    reexported = [dict(r) for r in ROUND_1]
    samples = raw_samples(reexported).with_columns(
        pl.when(pl.col("sample_uid") == "s1")
        .then(pl.struct(pl.col("file_uri"), pl.lit("1.00").alias("value"), pl.col("category")))
        .otherwise(pl.col("provenance_by_field"))
        .alias("provenance_by_field")
    )
    inc = store.resolve_update(RAW, samples=samples)
    assert inc.stale["sample_uid"].to_list() == ["s1"]
    same_content = _with_content(ROUND_1, content).select("sample_uid", DATA_VERSION_BY_FIELD)
    store.write(RAW, inc.to_process().join(same_content, on="sample_uid"))
    assert store.resolve_update(DERIVED).counts() == {
        "new": 0,
        "stale": 0,
        "orphaned": 0,
        "failed": 0,
    }

    # Now the content really changes: propagation resumes.
    inc = store.resolve_update(
        RAW,
        samples=samples.with_columns(
            pl.col("provenance_by_field").struct.with_fields(pl.lit("2.0").alias("value"))
        ),
    )
    changed = _with_content(ROUND_1, {**content, "s1": "sha-new"}).select(
        "sample_uid", DATA_VERSION_BY_FIELD
    )
    store.write(RAW, inc.to_process().join(changed, on="sample_uid"))
    stale = store.resolve_update(DERIVED).stale
    assert stale["sample_uid"].to_list() == ["s1"]


def _diamond() -> FeatureGraph:
    top = FeatureSpec(key="top", id_columns=IDS, fields=(FieldSpec("video"), FieldSpec("audio")))
    left = FeatureSpec(
        key="crops",
        id_columns=IDS,
        deps=("top",),
        fields=(FieldSpec("crop", deps=(FieldDep("top", ("video",)),)),),
    )
    right = FeatureSpec(
        key="transcript",
        id_columns=IDS,
        deps=("top",),
        fields=(FieldSpec("text", deps=(FieldDep("top", ("audio",)),)),),
    )
    bottom = FeatureSpec(
        key="summary",
        id_columns=IDS,
        deps=("crops", "transcript"),
        fields=(
            FieldSpec("visual", deps=(FieldDep("crops"),)),
            FieldSpec("spoken", deps=(FieldDep("transcript"),)),
            FieldSpec("both"),
        ),
    )
    return FeatureGraph([bottom, right, left, top])


def _top_samples(video: list[str], audio: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"sample_uid": [f"v{i}" for i in range(len(video))], "video": video, "audio": audio}
    ).with_columns(pl.struct("video", "audio").alias("provenance_by_field"))


def _materialise(store, key: str) -> dict[str, int]:
    inc = store.resolve_update(key)
    store.write(key, inc.to_process())
    return inc


def test_diamond_graph_recomputes_only_the_changed_branch(make_store):
    store = make_store(_diamond())
    assert list(store.graph) == ["top", "crops", "transcript", "summary"]
    store.write(
        "top",
        store.resolve_update("top", samples=_top_samples(["a", "b"], ["x", "y"])).to_process(),
    )
    for key in ("crops", "transcript", "summary"):
        assert _materialise(store, key).counts()["new"] == 2

    # A new video crop for v0 only: the transcript branch stays up to date.
    store.write(
        "top",
        store.resolve_update("top", samples=_top_samples(["a2", "b"], ["x", "y"])).to_process(),
    )
    crops = _materialise(store, "crops")
    transcript = _materialise(store, "transcript")
    summary = _materialise(store, "summary")
    assert crops.stale["sample_uid"].to_list() == ["v0"]
    assert transcript.counts() == {"new": 0, "stale": 0, "orphaned": 0, "failed": 0}
    assert summary.stale["sample_uid"].to_list() == ["v0"]
    assert summary.stale[STALE_FIELDS].to_list() == [["visual", "both"]]


def test_text_hash_is_xxh3_64_test_vectors():
    # Published xxh3-64 digests (seed 0) of b"" and b"abc", reinterpreted as signed Int64.
    expected = [3244421341483603138, 8696274497037089104]
    got = pl.DataFrame({"v": ["", "abc"]}).select(hash_parts([pl.col("v")]))["v"].to_list()
    assert HASH_ALGORITHM.startswith("xxh3_64+")
    assert [g & 0xFFFFFFFFFFFFFFFF for g in got] == expected
    assert text_hash("abc") == expected[1]


def test_fold_matches_the_plain_python_specification():
    values = [0, 1, -1, 2**62, -(2**63), None, 123456789]
    frame = pl.DataFrame(
        {"a": values, "b": list(reversed(values))}, schema={"a": pl.Int64, "b": pl.Int64}
    )
    got = frame.select(fold_hashes("tok", [pl.col("a"), pl.col("b")]).alias("h"))["h"].to_list()
    seed = text_hash("tok")
    want = [fold_reference(seed, [a, b]) for a, b in zip(frame["a"], frame["b"], strict=True)]
    assert [g & 0xFFFFFFFFFFFFFFFF for g in got] == want
    # Order matters, and every input matters.
    assert len(set(got)) == len(got)
    swapped = frame.select(fold_hashes("tok", [pl.col("b"), pl.col("a")]).alias("h"))["h"].to_list()
    assert swapped[0] != got[0]


def test_provenance_is_identical_in_another_process(tmp_path):
    from incremental_demo.features import GRAPH

    from dagster_hpc.incremental import InMemoryStore

    samples = raw_samples(ROUND_1)
    here = (
        InMemoryStore(GRAPH)
        .resolve_update(RAW, samples=samples)
        .new.sort("sample_uid")[PROVENANCE]
        .to_list()
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from features import GRAPH, RAW, ROUND_1, raw_samples;"
        "from dagster_hpc.incremental import InMemoryStore;"
        "inc = InMemoryStore(GRAPH).resolve_update(RAW, samples=raw_samples(ROUND_1));"
        "print(inc.new.sort('sample_uid')['provenance'].to_list())"
    )
    import incremental_demo.features as features

    demo_dir = str(Path(features.__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", code, demo_dir],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin"},
    )
    assert out.stdout.strip() == str(here)
    assert len(set(here)) == 3


@pytest.mark.parametrize("lazy", [True, False])
def test_lazy_option_returns_lazy_frames(lazy):
    from incremental_demo.features import GRAPH

    from dagster_hpc.incremental import InMemoryStore

    inc = InMemoryStore(GRAPH).resolve_update(RAW, samples=raw_samples(ROUND_1), lazy=lazy)
    assert isinstance(inc.new, pl.LazyFrame if lazy else pl.DataFrame)
    assert inc.counts() == {"new": 3, "stale": 0, "orphaned": 0, "failed": 0}
