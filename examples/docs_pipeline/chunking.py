"""Markdown -> chunks. Pure Python (no Docling, no tokenizer), deterministic.

Blocks (paragraphs, headings, tables: separated by blank lines) are packed into chunks of at most
``max_chars``; a chunk never crosses a level-1/level-2 heading, so an edit in one section changes
only that section's chunks (and only their embeddings are recomputed). A block longer than
``max_chars`` is cut at word boundaries. ``overlap_chars`` repeats the end of the previous chunk
of the same section at the start of the next.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Version of the algorithm below: part of docs/chunks' code version with the parameters.
CHUNKER_VERSION = "1"
_SECTION_HEADING = re.compile(r"^#{1,2}\s")


@dataclass(frozen=True)
class ChunkingConfig:
    max_chars: int = 1200
    overlap_chars: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_chars, int) or self.max_chars < 100:
            raise ValueError(f"ChunkingConfig: max_chars={self.max_chars!r} must be an int >= 100")
        if (
            not isinstance(self.overlap_chars, int)
            or not 0 <= self.overlap_chars < self.max_chars // 2
        ):
            raise ValueError(
                f"ChunkingConfig: overlap_chars={self.overlap_chars!r} must be in [0, max_chars/2)"
            )

    @property
    def code_version(self) -> str:
        return f"chunker-{CHUNKER_VERSION}/max{self.max_chars}/overlap{self.overlap_chars}"


def _blocks(markdown: str) -> list[str]:
    return [b.strip() for b in re.split(r"\n\s*\n", markdown) if b.strip()]


def _split_long(block: str, limit: int) -> list[str]:
    words, parts, current = block.split(), [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if len(candidate) > limit and current:
            parts.append(current)
            current = word[:limit]
        else:
            current = candidate[:limit] if not current else candidate
    if current:
        parts.append(current)
    return parts


def _tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of a chunk, without a word cut in half at its start."""
    if not chars:
        return ""
    tail = text[-chars:]
    if len(text) > chars and not text[-chars - 1].isspace():
        cut = tail.find(" ")
        tail = tail[cut + 1 :] if cut >= 0 else ""
    return tail


def _sections(blocks: list[str]) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for block in blocks:
        if _SECTION_HEADING.match(block) and sections[-1]:
            sections.append([])
        sections[-1].append(block)
    return [s for s in sections if s]


def chunk_markdown(markdown: str | None, config: ChunkingConfig) -> list[str]:
    """The chunks of one document, in order ([] for an empty or missing document)."""
    if not markdown:
        return []
    limit = config.max_chars
    # long blocks are cut short enough that the overlap still fits in front of each piece
    piece_limit = limit - config.overlap_chars - 2 if config.overlap_chars else limit
    chunks: list[str] = []
    for section in _sections(_blocks(markdown)):
        current = ""
        for block in section:
            pieces = _split_long(block, piece_limit) if len(block) > piece_limit else [block]
            for piece in pieces:
                candidate = f"{current}\n\n{piece}" if current else piece
                if len(candidate) <= limit:
                    current = candidate
                    continue
                chunks.append(current)
                tail = _tail(current, config.overlap_chars)
                current = (
                    f"{tail}\n\n{piece}" if tail and len(tail) + len(piece) + 2 <= limit else piece
                )
        if current:
            chunks.append(current)
    return chunks


def text_digest(text: str) -> str:
    """Content hash of a chunk's text: its data version, so embeddings of unchanged chunks stay."""
    return hashlib.sha256(text.encode()).hexdigest()
