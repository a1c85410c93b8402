"""Following a growing file by byte offset: whole lines only, nothing lost, nothing twice."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FileTail:
    """Offset and held-back partial line of one followed file (pure: no I/O)."""

    path: str
    offset: int = 0
    _pending: bytes = field(default=b"", repr=False)

    def feed(self, data: bytes) -> list[str]:
        """Account for ``data`` read at ``offset``; return the lines it completed."""
        if not data:
            return []
        self.offset += len(data)
        buf = self._pending + data
        *complete, self._pending = buf.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in complete]

    def flush(self) -> list[str]:
        """The held-back last line, once the writer is known to be finished."""
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", errors="replace")] if rest else []
