"""Pure helpers shared by the SSH transports: remote shell commands and the payloads they carry.

No I/O on the remote side happens here; each function returns a command string (every argument
quoted with ``shlex.quote``) or turns bytes into bytes, so it is unit-testable.
"""

from __future__ import annotations

import base64
import binascii
import io
import shlex
import tarfile
import uuid
from pathlib import Path

from dagster_hpc.errors import ConfigError, TransportError


def tar_directory(local_dir: Path) -> bytes:
    """An uncompressed tar of ``local_dir``'s contents (paths relative to it, modes kept)."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise ConfigError(f"cannot upload {local_dir}: it is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(local_dir.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def untar_command(remote_dir: str, mode: int) -> str:
    """Create ``remote_dir`` with ``mode`` (private from the first instant) and unpack stdin into it."""
    q = shlex.quote(remote_dir)
    return (
        f"umask 077 && mkdir -p {q} && chmod {mode:o} {q} && tar -x -m --no-same-owner -f - -C {q}"
    )


def read_command(remote_path: str, offset: int, max_bytes: int) -> str:
    """Print up to ``max_bytes`` of ``remote_path`` from byte ``offset``; nothing if it is missing."""
    if offset < 0 or max_bytes <= 0:
        raise ConfigError(
            f"bad read of {remote_path}: offset {offset} must be >= 0 and max_bytes {max_bytes} > 0"
        )
    q = shlex.quote(remote_path)
    return f"if [ -r {q} ]; then tail -c +{offset + 1} {q} | head -c {max_bytes}; fi"


def read_many_command(requests: list[tuple[str, int]], max_bytes: int) -> str:
    """One command that prints, per request, one base64 line of that file's bytes from its offset.

    base64 keeps the answers apart whatever the files contain; a missing file gives an empty line.
    """
    parts = []
    for path, offset in requests:
        inner = read_command(path, offset, max_bytes)
        parts.append(f"{{ {inner}; }} | base64 -w0; echo")
    return "; ".join(parts)


def parse_read_many(stdout: bytes, count: int) -> list[bytes]:
    """Split the output of ``read_many_command`` back into ``count`` byte strings."""
    lines = stdout.split(b"\n")
    if len(lines) < count:
        raise TransportError(
            f"batched read returned {len(lines)} answers for {count} files; the remote shell "
            "probably lacks GNU base64 (-w0). hint: use a login node with GNU coreutils"
        )
    try:
        return [base64.b64decode(line, validate=True) for line in lines[:count]]
    except binascii.Error as exc:
        raise TransportError(f"batched read returned data that is not base64: {exc}") from exc


def temp_name(remote_path: str) -> str:
    """A unique sibling name for an upload in progress (two writers never share it)."""
    return f"{remote_path}.part-{uuid.uuid4().hex[:12]}"


def publish_command(tmp_path: str, remote_path: str, mode: int) -> str:
    """Give the finished upload ``mode`` and rename it into place: readers never see half a file."""
    q_tmp, q_dst = shlex.quote(tmp_path), shlex.quote(remote_path)
    return f"chmod {mode:o} {q_tmp} && mv -f {q_tmp} {q_dst}"


def end_with_stdin_command(command: str) -> str:
    """Run ``command`` so that it is sent SIGTERM when our side of the channel goes away.

    sshd does not signal a command when a client without a terminal disconnects; the command
    would run on until it next writes. Here a watcher waits for stdin to close (the client
    disconnected, or we are done) and then terminates the command; the exit code is kept.
    """
    script = (
        # background jobs get /dev/null as stdin unless told otherwise: keep ours on fd 3
        'exec 3<&0; sh -c "$1" </dev/null & c=$!; '
        '{ cat <&3 >/dev/null; kill -TERM "$c" 2>/dev/null; } & w=$!; exec 3<&-; '
        'wait "$c"; rc=$?; kill "$w" 2>/dev/null; exit "$rc"'
    )
    return f"sh -c {shlex.quote(script)} sh {shlex.quote(command)}"
