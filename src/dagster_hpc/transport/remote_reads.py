"""``read_from`` / ``read_many_from`` for the transports that run shell commands on the login
node (``_run_bytes``): SSHTransport, OpenSSHTransport and HolderTransport read files the same
way, one remote command per call (the commands are built in ``_shell``)."""

from __future__ import annotations

from dagster_hpc.errors import TransportError
from dagster_hpc.transport import _shell

# the last bytes of the remote stderr quoted in a failed read's error
STDERR_TAIL_CHARS = 300


class RemoteReadsMixin:
    """Reads of remote files through the transport's ``_run_bytes``."""

    # extra ``_run_bytes`` arguments of every read (HolderTransport re-sends a lost read)
    _read_kwargs: dict = {}  # noqa: RUF012 - per-class constant

    def _read(self, command: str) -> tuple[int, bytes, bytes]:
        return self._run_bytes(command, timeout=None, stdin=None, **self._read_kwargs)  # type: ignore[attr-defined]

    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        code, out, err = self._read(_shell.read_command(remote_path, offset, max_bytes))
        if code != 0:
            raise TransportError(
                f"reading {remote_path} from byte {offset} failed (exit {code}): "
                f"{err.decode(errors='replace')[-STDERR_TAIL_CHARS:]}"
            )
        return out

    def read_many_from(
        self, requests: list[tuple[str, int]], *, max_bytes: int = 4 << 20
    ) -> list[bytes]:
        if not requests:
            return []
        code, out, err = self._read(_shell.read_many_command(requests, max_bytes))
        if code != 0:
            raise TransportError(
                f"batched read of {len(requests)} files failed (exit {code}): "
                f"{err.decode(errors='replace')[-STDERR_TAIL_CHARS:]}"
            )
        return _shell.parse_read_many(out, len(requests))
