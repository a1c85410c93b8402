"""The one interface every way of reaching a cluster implements.

Backends, Pipes readers and env shipping only talk to a ``Transport``. Implementations:
LocalTransport (this machine is the login node), SSHTransport (asyncssh, one connection per
host and process) and OpenSSHTransport (system ssh + persistent ControlMaster).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster_hpc.transport.watch import WatchResult

_COUNTER_LOCK = threading.Lock()


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Transport(abc.ABC):
    """Run commands, ship a directory tree, read files by byte offset on the login node.

    All methods are blocking and thread-safe (Pipes readers call them from threads).
    ``command`` strings are passed to a POSIX shell on the remote side: callers build them
    with ``shlex.quote`` for every argument.
    """

    @abc.abstractmethod
    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``command`` in a shell; never raises for a non-zero exit (see ``check``)."""

    def check(self, command: str, *, timeout: float | None = None, hint: str = "") -> str:
        """Run ``command`` and return stdout; raise RemoteCommandError on a non-zero exit."""
        from dagster_hpc.errors import RemoteCommandError

        result = self.run(command, timeout=timeout)
        if not result.ok:
            raise RemoteCommandError(command, result.exit_code, result.stdout, result.stderr, hint)
        return result.stdout

    @abc.abstractmethod
    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        """Copy ``local_dir``'s contents into ``remote_dir`` (created with ``mode``) in ONE round trip.

        Returns the number of bytes sent.
        """

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o600) -> int:
        """Upload one (possibly large) file to ``remote_path``; returns the number of bytes sent.

        The file appears under its final name only when complete (written to a temporary
        name next to it, then renamed), so a reader never sees half a file. This default
        sends the bytes through ``run``'s stdin; implementations with a streaming channel
        (SFTP) should override it to avoid holding the file in memory.
        """
        import shlex
        import uuid

        from dagster_hpc import progress
        from dagster_hpc.errors import TransportError

        data = Path(local_path).read_bytes()
        report = progress.bound(f"upload {Path(local_path).name}", len(data))
        report(0)  # one stdin stream: start and end only
        tmp = f"{remote_path}.part-{uuid.uuid4().hex[:12]}"
        q_tmp, q_dst = shlex.quote(tmp), shlex.quote(remote_path)
        command = f"umask 077 && cat > {q_tmp} && chmod {mode:o} {q_tmp} && mv -f {q_tmp} {q_dst}"
        result = self.run(command, stdin=data)
        if not result.ok:
            raise TransportError(
                f"uploading {local_path} to {remote_path} failed (exit {result.exit_code}): "
                f"{result.stderr.strip()[-500:]}\nhint: check that the remote directory exists and has free space"
            )
        report(len(data))
        return len(data)

    @abc.abstractmethod
    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        """Bytes of ``remote_path`` from ``offset`` (b"" if the file is missing or has no more)."""

    def read_many_from(
        self, requests: list[tuple[str, int]], *, max_bytes: int = 4 << 20
    ) -> list[bytes]:
        """Several ``read_from`` calls; implementations batch them into one round trip."""
        return [self.read_from(p, o, max_bytes=max_bytes) for p, o in requests]

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
        """The exit_code file (read first), then new bytes of each ``(path, offset)``.

        Remote transports wait on the login node up to ``window_s`` for a change, checking every
        ``check_s`` growing to ``check_max_s`` (but at most every ``fast_cap_s`` during the
        first ``fast_s``; transport/watch.py: one round trip per change or window). This default reads once without waiting (``waited=False``): cheap local files.
        """
        from dagster_hpc.transport.watch import WatchResult

        chunks = self.read_many_from([(exit_path, 0), *tails], max_bytes=max_bytes)
        return WatchResult(chunks[0], chunks[1:], waited=False, next_check_s=check_s)

    def stream(self, command: str, *, timeout: float | None = None) -> Iterator[bytes]:
        """``command``'s stdout in chunks as it is produced (e.g. ``tail -F``, a long ``srun``).

        Raises RemoteCommandError at the end if the command exits non-zero. Stopping the
        iteration early ends the remote command. This default runs the command to completion
        and yields its whole output once; the SSH transports stream for real.
        """
        from dagster_hpc.errors import RemoteCommandError

        result = self.run(command, timeout=timeout)
        if result.stdout:
            yield result.stdout.encode()
        if not result.ok:
            raise RemoteCommandError(command, result.exit_code, result.stdout, result.stderr)

    # Counters for benchmarks and the env cache's "a hit uploads nothing" check. Class defaults
    # so subclasses need no __init__ for them; one lock for all instances (updates are tiny).
    _roundtrips: int = 0
    _bytes_sent: int = 0

    def _count(self, roundtrips: int = 1, sent: int = 0) -> None:
        """Record round trips made and payload bytes uploaded (thread-safe)."""
        with _COUNTER_LOCK:
            self._roundtrips += roundtrips
            self._bytes_sent += sent

    @property
    def roundtrips(self) -> int:
        """Round trips made so far by this transport (for benchmarks)."""
        return self._roundtrips

    @property
    def bytes_sent(self) -> int:
        """Payload bytes uploaded so far (put_tree, put_file, stdin) by this transport."""
        return self._bytes_sent

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (idempotent)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
