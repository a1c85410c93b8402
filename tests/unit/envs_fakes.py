"""A transport double for env tests: runs commands with the local bash, counts bytes and trips."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from dagster_hpc.transport.base import CommandResult, Transport


class LocalShellTransport(Transport):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roundtrips = 0
        self._bytes = 0
        self.commands: list[str] = []

    def _count(self, sent: int) -> None:
        with self._lock:
            self._roundtrips += 1
            self._bytes += sent

    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        self._count(len(stdin or b""))
        self.commands.append(command)
        out = subprocess.run(
            ["bash", "-c", command],
            input=stdin or b"",
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return CommandResult(out.returncode, out.stdout.decode(), out.stderr.decode())

    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        shutil.copytree(local_dir, remote_dir, dirs_exist_ok=True)
        size = sum(p.stat().st_size for p in Path(local_dir).rglob("*") if p.is_file())
        self._count(size)
        return size

    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        try:
            with open(remote_path, "rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return b""

    @property
    def roundtrips(self) -> int:
        return self._roundtrips

    @property
    def bytes_sent(self) -> int:
        return self._bytes
