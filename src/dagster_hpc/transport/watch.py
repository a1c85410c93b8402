"""Waiting for a job's files to change ON the login node: one round trip per change or window.

The Pipes reader used to ask "anything new?" many times a second; every question was a round
trip and a shell with ~12 processes on the login node. ``watch_files`` asks once and the login
node answers when something changed (or the window ended): ``watch.sh`` sleeps without a
process between checks (``read -t`` on a private pipe), checks with one ``stat``, reads the
exit_code file first and each grown file with one ``dd``. A silent job thus costs one round
trip per window, and a trivial job a couple of them in all, however long it runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources

from dagster_hpc.errors import ConfigError, TransportError
from dagster_hpc.transport.remote_reads import RemoteReadsMixin

SCRIPT_NAME = "watch.sh"
# The answer may take the window plus the checks' own time; past this margin the login node
# is hanging and the caller's retry logic takes over.
WATCH_TIMEOUT_MARGIN_S = 60.0

_SCRIPT: str | None = None


@dataclass(frozen=True)
class WatchResult:
    """What one watch saw: exit_code file content (b"" if absent) and new bytes per file."""

    exit_chunk: bytes
    chunks: list[bytes]
    waited: bool  # True when the transport waited for a change itself (no client-side sleep)
    next_check_s: float  # the check period reached on the login node (the backoff continues)


def script() -> str:
    """watch.sh without its comment lines (they are for readers of the file, not the wire)."""
    global _SCRIPT
    if _SCRIPT is None:
        text = resources.files("dagster_hpc.transport").joinpath(SCRIPT_NAME).read_text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        _SCRIPT = "\n".join(lines) + "\n"
    return _SCRIPT


def _ms(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


def watch_command(
    exit_path: str,
    tails: list[tuple[str, int]],
    *,
    window_s: float,
    check_s: float,
    check_max_s: float,
    linger_s: float,
    max_bytes: int,
    fast_s: float = 0.0,
    fast_cap_s: float = 0.0,
) -> str:
    """The shell command running watch.sh with every argument quoted."""
    for path, offset in tails:
        if offset < 0 or "\n" in path:
            raise ConfigError(f"bad watch of {path!r} from byte {offset}")
    if max_bytes <= 0 or check_s <= 0 or check_max_s < check_s or window_s < 0:
        raise ConfigError(
            f"bad watch intervals: window {window_s}, check {check_s}..{check_max_s}, max_bytes {max_bytes}"
        )
    args = [_ms(window_s), _ms(check_s), _ms(check_max_s), _ms(fast_s), _ms(fast_cap_s)]
    args += [_ms(linger_s), str(max_bytes)]
    args.append(exit_path)
    for path, offset in tails:
        args += [path, str(offset)]
    return "bash -c " + " ".join(shlex.quote(a) for a in [script(), "dhpc-watch", *args])


def parse_watch(stdout: bytes, tails: list[tuple[str, int]]) -> WatchResult:
    """Split watch.sh's answer; a torn answer raises TransportError (the next watch retries)."""
    header, sep, body = stdout.partition(b"\n")
    fields = header.decode("ascii", "replace").split()
    if not sep or len(fields) != 2 + 2 * len(tails):
        raise TransportError(
            f"watching the job's files returned {header[:200]!r}, not a watch.sh header. "
            "hint: the login node needs bash 4+, GNU stat and GNU dd"
        )
    rc, check_ms = fields[0], int(fields[1])
    counts = [int(n) for n in fields[3::2]]
    if sum(counts) != len(body):
        raise TransportError(
            f"watching the job's files returned {len(body)} bytes where the header announced "
            f"{sum(counts)} (a file shrank while it was read?); retrying"
        )
    chunks, pos = [], 0
    for n in counts:
        chunks.append(body[pos : pos + n])
        pos += n
    exit_chunk = b"" if rc == "-" else rc.encode() + b"\n"
    return WatchResult(exit_chunk, chunks, waited=True, next_check_s=check_ms / 1000)


class RemoteWatchMixin(RemoteReadsMixin):
    """``watch_files`` (and the reads) for transports that run shell commands remotely
    (``_run_bytes``); a watch only reads, so it takes the reads' ``_read_kwargs``."""

    def watch_files(
        self,
        exit_path: str,
        tails: list[tuple[str, int]],
        *,
        window_s: float,
        check_s: float,
        check_max_s: float,
        linger_s: float = 0.0,
        max_bytes: int = 4 << 20,
        fast_s: float = 0.0,
        fast_cap_s: float = 0.0,
    ) -> WatchResult:
        command = watch_command(
            exit_path,
            tails,
            window_s=window_s,
            check_s=check_s,
            check_max_s=check_max_s,
            linger_s=linger_s,
            max_bytes=max_bytes,
            fast_s=fast_s,
            fast_cap_s=fast_cap_s,
        )
        code, out, err = self._run_bytes(  # type: ignore[attr-defined]
            command, timeout=window_s + WATCH_TIMEOUT_MARGIN_S, stdin=None, **self._read_kwargs
        )
        if code != 0:
            raise TransportError(
                f"watching {exit_path} and {len(tails)} files failed (exit {code}): "
                f"{err.decode(errors='replace')[-300:]}"
            )
        return parse_watch(out, tails)
