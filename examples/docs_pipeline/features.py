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
from docs_pipeline.cost import RAY_FIXED_S
from docs_pipeline.embed import EmbeddingConfig

SOURCE = "docs/source"
CONVERTED = "docs/converted"
CHUNKS = "docs/chunks"
EMBEDDINGS = "docs/embeddings"
DOC_ID = "doc_id"
CHUNK_INDEX = "chunk_index"
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


def _env_float(name: str, default: float) -> float:
    value = _env(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={value!r} must be a number (seconds)") from None


@dataclass(frozen=True)
class Settings:
    """Where the documents and the store are, and how each step computes."""

    corpus_dir: Path
    store_root: Path
    converter: ConverterConfig = field(default_factory=ConverterConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # Where conversion runs (cost.py): by default from the estimated seconds of the increment
    # against Ray's fixed price; a count here (documents converted in-process at most) instead.
    in_process_max_docs: int | None = None
    ray_fixed_s: float = RAY_FIXED_S
    # the same for docs/embeddings, in chunks (default: the cost rule)
    embed_in_process_max: int | None = None
    ray_actors: int | None = None  # default: one per CPU of the Ray cluster

    def __post_init__(self) -> None:
        for name in ("in_process_max_docs", "embed_in_process_max"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value} must be >= 0")
        if self.ray_fixed_s < 0:
            raise ValueError(f"ray_fixed_s={self.ray_fixed_s} must be >= 0")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"ray_actors={self.ray_actors} must be >= 1")

    @classmethod
    def from_env(cls) -> Settings:
        """``DAGSTER_HPC_DOCS_*``: DIR, STORE, CHUNK_MAX_CHARS, CHUNK_OVERLAP, EMBEDDING_MODEL,
        EMBEDDING_MODEL_PATH, IN_PROCESS_MAX, EMBED_IN_PROCESS_MAX, RAY_FIXED_S, RAY_ACTORS,
        PDF_PIPELINE, ARTIFACTS_PATH.
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
            in_process_max_docs=_env_int("IN_PROCESS_MAX", None),
            ray_fixed_s=_env_float("RAY_FIXED_S", RAY_FIXED_S),
            embed_in_process_max=_env_int("EMBED_IN_PROCESS_MAX", None),
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
        "ray_fixed_s": settings.ray_fixed_s,
        "embed_in_process_max": settings.embed_in_process_max,
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
        ray_fixed_s=data["ray_fixed_s"],
        embed_in_process_max=data["embed_in_process_max"],
        ray_actors=data["ray_actors"],
    )
