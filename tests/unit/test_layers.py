"""Layers point one way: what a module may import is fixed by its layer (DESIGN.md), and the
provenance engine runs on compute nodes without Dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dagster_hpc

SRC = Path(dagster_hpc.__file__).parent

# Modules that must never import anything above them (leaf contracts).
LEAVES = {
    "dagster_hpc.errors": set(),
    "dagster_hpc.rundir": {"dagster_hpc.errors"},
    "dagster_hpc.localtool": {"dagster_hpc.errors"},
}
# lower layer -> modules it must not import (directly or in a function), by prefix
FORBIDDEN = {
    "dagster_hpc.request": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.prepared": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.jobscript": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.pipes": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.retention": ("dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.runs_gc": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.transport": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute", "dagster_hpc.envs", "dagster_hpc.pipes"),
    "dagster_hpc.launchers": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute", "dagster_hpc.envs", "dagster_hpc.pipes"),
    "dagster_hpc.envs": ("dagster_hpc.backends", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.metrics": ("dagster_hpc.backends.slurm", "dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.backends": ("dagster_hpc.execution", "dagster_hpc.compute"),
    "dagster_hpc.execution": ("dagster_hpc.compute",),
    "dagster_hpc.incremental": ("dagster", "dagster_hpc.compute", "dagster_hpc.execution", "dagster_hpc.backends"),
}  # fmt: skip


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions (TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _all_modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_leaf_modules_import_only_their_contract() -> None:
    modules = _all_modules()
    for leaf, allowed in LEAVES.items():
        ours = {m for m in modules[leaf] if _under(m, "dagster_hpc")}
        assert ours <= allowed, f"{leaf} imports {sorted(ours - allowed)}: it must stay a leaf"


def test_dependencies_point_down_only() -> None:
    bad = []
    for module, imports in _all_modules().items():
        for layer, forbidden in FORBIDDEN.items():
            if not _under(module, layer):
                continue
            bad += [f"{module} -> {m}" for m in imports for f in forbidden if _under(m, f)]
    assert bad == [], "imports pointing up a layer:\n" + "\n".join(sorted(bad))


def test_importing_the_incremental_engine_does_not_import_dagster() -> None:
    code = (
        "import sys, dagster_hpc.incremental, dagster_hpc.incremental.store.delta; "
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
