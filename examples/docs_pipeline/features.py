"""The document pipeline's features and settings (no Dagster, no Docling import: the Ray payload
imports this on the compute nodes).

    docs/source      one sample per document: content_hash, size, path (root, from the folder)
    docs/converted   markdown, pages, tables (+ status, error): reads source.content_hash only
    docs/chunks      one document -> many chunks (expansion on doc_id): reads converted.markdown
    docs/embeddings  one vector per chunk: reads chunks.text only

Code versions: the converter configuration + Docling's version (converted), the chunking
parameters (chunks), the model's name and version (embeddings).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dagster_hpc.incremental import (
    Expansion,
    FeatureDep,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
)
from docs_pipeline.chunking import ChunkingConfig
from docs_pipeline.convert import ConverterConfig
from docs_pipeline.embed import EmbeddingConfig

SOURCE = "docs/source"
CONVERTED = "docs/converted"
CHUNKS = "docs/chunks"
EMBEDDINGS = "docs/embeddings"
DOC_ID = "doc_id"
CHUNK_INDEX = "chunk_index"
# Below (or at) this many documents to convert, the conversion runs in the Dagster step's own
# process: no Slurm job, no Ray. Measured on 2 cores: a Ray cluster costs ~8-12 s to start (plus
# a queue wait in slurm mode) and two actors convert at most twice as fast as one process
# (~0.15-0.3 s per document here), so Ray pays off from a few dozen documents on.
IN_PROCESS_MAX_DOCS = 32
ENV_PREFIX = "DAGSTER_HPC_DOCS_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def _env_int(name: str, default: int | None) -> int | None:
    value = _env(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={value!r} must be an integer") from None


@dataclass(frozen=True)
class Settings:
    """Where the documents and the store are, and how each step computes."""

    corpus_dir: Path
    store_root: Path
    converter: ConverterConfig = field(default_factory=ConverterConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    in_process_max_docs: int = IN_PROCESS_MAX_DOCS
    ray_actors: int | None = None  # default: one per CPU of the Ray cluster

    def __post_init__(self) -> None:
        if self.in_process_max_docs < 0:
            raise ValueError(f"in_process_max_docs={self.in_process_max_docs} must be >= 0")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"ray_actors={self.ray_actors} must be >= 1")

    @classmethod
    def from_env(cls) -> Settings:
        """``DAGSTER_HPC_DOCS_*``: DIR, STORE, CHUNK_MAX_CHARS, CHUNK_OVERLAP, EMBEDDING_MODEL,
        EMBEDDING_MODEL_PATH, IN_PROCESS_MAX, RAY_ACTORS, PDF_PIPELINE, ARTIFACTS_PATH.
        (Environment, not run config: Dagster's step processes rebuild the definitions.)"""
        base = Path(tempfile.gettempdir()) / "dagster-hpc-docs"
        chunk_defaults = ChunkingConfig()
        return cls(
            corpus_dir=Path(_env("DIR") or base / "corpus"),
            store_root=Path(_env("STORE") or base / "store"),
            converter=ConverterConfig(
                pdf_pipeline=_env("PDF_PIPELINE", "native"),  # type: ignore[arg-type]
                artifacts_path=_env("ARTIFACTS_PATH"),
            ),
            chunking=ChunkingConfig(
                max_chars=_env_int("CHUNK_MAX_CHARS", chunk_defaults.max_chars) or 0,
                overlap_chars=_env_int("CHUNK_OVERLAP", chunk_defaults.overlap_chars) or 0,
            ),
            embedding=EmbeddingConfig(
                model=_env("EMBEDDING_MODEL") or EmbeddingConfig.model,
                model_path=_env("EMBEDDING_MODEL_PATH"),
            ),
            in_process_max_docs=_env_int("IN_PROCESS_MAX", IN_PROCESS_MAX_DOCS) or 0,
            ray_actors=_env_int("RAY_ACTORS", None),
        )


def build_graph(settings: Settings) -> FeatureGraph:
    """The four features, their code versions taken from the settings."""
    by_hash = (FieldDep(SOURCE, ("content_hash",)),)
    source = FeatureSpec(
        key=SOURCE,
        id_columns=(DOC_ID,),
        fields=(FieldSpec("content_hash"), FieldSpec("size"), FieldSpec("path")),
    )
    converter_version = settings.converter.code_version
    converted = FeatureSpec(
        key=CONVERTED,
        id_columns=(DOC_ID,),
        deps=(SOURCE,),
        fields=tuple(
            FieldSpec(name, code_version=converter_version, deps=by_hash)
            for name in ("markdown", "pages", "tables")
        ),
    )
    chunks = FeatureSpec(
        key=CHUNKS,
        id_columns=(DOC_ID, CHUNK_INDEX),
        deps=(FeatureDep(CONVERTED, lineage=Expansion(on=(DOC_ID,))),),
        fields=(
            FieldSpec(
                "text",
                code_version=settings.chunking.code_version,
                deps=(FieldDep(CONVERTED, ("markdown",)),),
            ),
        ),
    )
    embeddings = FeatureSpec(
        key=EMBEDDINGS,
        id_columns=(DOC_ID, CHUNK_INDEX),
        deps=(CHUNKS,),
        fields=(
            FieldSpec(
                "embedding",
                code_version=settings.embedding.code_version,
                deps=(FieldDep(CHUNKS, ("text",)),),
            ),
        ),
    )
    return FeatureGraph([source, converted, chunks, embeddings])


def settings_to_dict(settings: Settings) -> dict:
    """JSON-ready settings, for a payload that must rebuild the same graph."""
    return {
        "corpus_dir": str(settings.corpus_dir),
        "store_root": str(settings.store_root),
        "converter": asdict(settings.converter),
        "chunking": asdict(settings.chunking),
        "embedding": asdict(settings.embedding),
        "in_process_max_docs": settings.in_process_max_docs,
        "ray_actors": settings.ray_actors,
    }


def settings_from_dict(data: dict) -> Settings:
    return Settings(
        corpus_dir=Path(data["corpus_dir"]),
        store_root=Path(data["store_root"]),
        converter=ConverterConfig(**data["converter"]),
        chunking=ChunkingConfig(**data["chunking"]),
        embedding=EmbeddingConfig(**data["embedding"]),
        in_process_max_docs=data["in_process_max_docs"],
        ray_actors=data["ray_actors"],
    )
