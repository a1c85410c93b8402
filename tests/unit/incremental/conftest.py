"""Fixtures for the incremental engine: the demo graph and both store kinds."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dagster_hpc.incremental import DeltaStore, FeatureGraph, InMemoryStore, MetadataStore

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
if str(EXAMPLES_DIR) not in sys.path:  # the demo is the package `incremental_demo` there
    sys.path.insert(0, str(EXAMPLES_DIR))

StoreFactory = Callable[[FeatureGraph], MetadataStore]


@pytest.fixture(params=["memory", "delta"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Build a store of each kind for a graph (every test using it runs on both)."""

    def build(graph: FeatureGraph) -> MetadataStore:
        if request.param == "memory":
            return InMemoryStore(graph)
        return DeltaStore(tmp_path / "store", graph)

    return build


@pytest.fixture
def demo_store(make_store: StoreFactory) -> MetadataStore:
    from incremental_demo.features import GRAPH

    return make_store(GRAPH)
