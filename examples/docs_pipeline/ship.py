"""Stage this pipeline's modules for a payload: ``docs_pipeline.zip`` (pure Python, zipimport),
so the job environment needs only the third-party packages (scripts/docs-env.sh)."""

from __future__ import annotations

import zipfile
from pathlib import Path

PIPELINE_ARCHIVE = "docs_pipeline.zip"
_PACKAGE = Path(__file__).resolve().parent


def pipeline_archive(directory: str | Path) -> Path:
    target = Path(directory) / PIPELINE_ARCHIVE
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(_PACKAGE.glob("*.py")):
            archive.write(path, f"docs_pipeline/{path.name}")
    return target
