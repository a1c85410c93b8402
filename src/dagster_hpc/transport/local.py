"""LocalTransport: this machine is the login node, so "remote" paths are local paths.

Used by local mode and by sites where Dagster runs on the login node itself. Commands go to
``/bin/sh`` exactly as they would over SSH, so callers exercise the same quoting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from dagster_hpc import progress
from dagster_hpc.errors import TransportError
from dagster_hpc.transport.base import CommandResult, Transport


class LocalTransport(Transport):
    """Run commands in a local shell and read local files; thread-safe."""

    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        self._count(sent=len(stdin or b""))
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(
                f"local command timed out after {timeout} s: {command}\n"
                "hint: raise the timeout or check what the command waits for"
            ) from exc
        return CommandResult(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )

    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        """Copy the tree (a no-op when both paths are the same directory); returns bytes copied."""
        src, dst = Path(local_dir).resolve(), Path(remote_dir)
        dst.mkdir(parents=True, exist_ok=True)
        os.chmod(dst, mode)
        sent = 0
        if dst.resolve() != src:
            for path in src.rglob("*"):
                target = dst / path.relative_to(src)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    sent += path.stat().st_size
        self._count(sent=sent)
        return sent

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o600) -> int:
        """Copy to a temporary name next to ``remote_path``, then rename (never half a file)."""
        dst = Path(remote_path)
        tmp = dst.with_name(f"{dst.name}.part-{uuid.uuid4().hex[:12]}")
        report = progress.bound(f"upload {Path(local_path).name}", Path(local_path).stat().st_size)
        report(0)
        shutil.copyfile(local_path, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dst)
        size = dst.stat().st_size
        self._count(sent=size)
        report(size)
        return size

    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        self._count()
        return _read_local(remote_path, offset, max_bytes)

    def read_many_from(
        self, requests: list[tuple[str, int]], *, max_bytes: int = 4 << 20
    ) -> list[bytes]:
        self._count()  # one "round trip" for the batch, as a remote transport would do it
        return [_read_local(p, o, max_bytes) for p, o in requests]


def _read_local(path: str, offset: int, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(max_bytes)
    except FileNotFoundError:
        return b""
