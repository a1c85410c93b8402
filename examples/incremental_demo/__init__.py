"""The seed demo of the incremental engine (importable as ``incremental_demo`` from examples/)."""
