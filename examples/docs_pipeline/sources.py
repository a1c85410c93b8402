"""The folder -> docs/source samples: one per document, keyed by a stable ``doc_id``.

A document keeps its id when it is edited (same path) and when it is moved or renamed (a new
path whose content hash equals that of a stored document whose path vanished), so a move is a
change of the ``path`` field only, which conversion does not read. A file whose size and mtime
match the stored record is not read again (its stored hash is reused); a touched file (new mtime)
is re-hashed and, its content being the same, changes nothing downstream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from docs_pipeline.convert import SUFFIX_FORMATS

# Read size for hashing: streams any file in bounded memory.
HASH_BLOCK_BYTES = 1 << 20
SOURCE_COLUMNS = ("doc_id", "path", "size", "mtime_ns", "content_hash")


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _new_id(rel_path: str, taken: set[str]) -> str:
    salt = 0
    while True:
        candidate = "d" + hashlib.sha256(f"{rel_path}#{salt}".encode()).hexdigest()[:15]
        if candidate not in taken:
            return candidate
        salt += 1


def list_documents(root: Path) -> list[Path]:
    """Supported files under ``root`` (recursively, sorted; hidden files skipped)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIX_FORMATS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def scan(root: str | Path, stored: pl.DataFrame | None = None) -> pl.DataFrame:
    """Samples of docs/source for the files under ``root``; ``stored`` is the feature's current
    table (for ids, and to skip re-hashing unchanged files)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"the document folder {root} does not exist: generate the example corpus with "
            "`python -m docs_pipeline.corpus DIR` or set DAGSTER_HPC_DOCS_DIR"
        )
    known: dict[str, dict] = {}
    if stored is not None and stored.height and "path" in stored.columns:
        known = {r["path"]: r for r in stored.select(SOURCE_COLUMNS).iter_rows(named=True)}
    rows = []
    for file in list_documents(root):
        rel = file.relative_to(root).as_posix()
        stat = file.stat()
        old = known.get(rel)
        same = (
            old is not None and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns
        )
        digest = old["content_hash"] if same else content_hash(file)
        rows.append(
            {
                "path": rel,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "content_hash": digest,
                "format": SUFFIX_FORMATS[file.suffix.lower()],
            }
        )
    present = {r["path"] for r in rows}
    # stored documents whose path vanished, by content: candidates for a move
    vanished: dict[str, list[str]] = {}
    for path, rec in sorted(known.items()):
        if path not in present:
            vanished.setdefault(rec["content_hash"], []).append(rec["doc_id"])
    taken = {rec["doc_id"] for path, rec in known.items() if path in present}
    for row in rows:
        old = known.get(row["path"])
        if old is not None:
            row["doc_id"] = old["doc_id"]
        elif vanished.get(row["content_hash"]):
            row["doc_id"] = vanished[row["content_hash"]].pop(0)  # moved: same id
        else:
            row["doc_id"] = _new_id(row["path"], taken)
        taken.add(row["doc_id"])
    schema = {
        "doc_id": pl.String,
        "path": pl.String,
        "size": pl.Int64,
        "mtime_ns": pl.Int64,
        "content_hash": pl.String,
        "format": pl.String,
    }
    frame = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    return frame.select([*SOURCE_COLUMNS, "format"]).with_columns(
        pl.struct(pl.col("content_hash"), pl.col("size").cast(pl.String), pl.col("path")).alias(
            "provenance_by_field"
        ),
    )
