"""Ship the engine to a payload: a zip of ``dagster_hpc.incremental`` that Python imports directly.

A payload on a compute node needs this package but not the rest of dagster-hpc (nor Dagster):
``engine_archive`` writes a small zip (pure Python, zipimport) to stage next to the payload; the
payload puts it first on ``sys.path`` before importing (it cannot import a helper for that from
the engine it is about to find)::

    archive = os.path.join(os.environ.get("DAGSTER_HPC_RUN_DIR", "."), "dagster_hpc_engine.zip")
    if os.path.isfile(archive):
        sys.path.insert(0, archive)

The environment still provides the compiled dependencies: polars, polars-hash, pyarrow, deltalake.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ENGINE_ARCHIVE = "dagster_hpc_engine.zip"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../dagster_hpc
# The modules the engine needs besides its own package (the package __init__ re-exports lazily).
_SUPPORT = ("__init__.py", "errors.py")


def engine_archive(directory: str | Path) -> Path:
    """Write ``dagster_hpc_engine.zip`` (dagster_hpc/__init__, errors, incremental/) into directory."""
    target = Path(directory) / ENGINE_ARCHIVE
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in _SUPPORT:
            archive.write(_PACKAGE_ROOT / name, f"dagster_hpc/{name}")
        for path in sorted((_PACKAGE_ROOT / "incremental").rglob("*.py")):
            archive.write(path, f"dagster_hpc/{path.relative_to(_PACKAGE_ROOT).as_posix()}")
    return target
