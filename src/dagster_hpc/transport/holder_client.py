"""HolderTransport: every process of this machine shares one SSH login through a local holder.

The default for ``SSHConnectionResource`` (``connection_holder=True``): the first process that
needs the cluster starts the holder (``transport/holder.py``) under a file lock, so N
processes starting at once still start one holder and log in once; the others reach it over
its Unix socket. Each request is one short local socket connection (thread-safe, no state kept
between requests, safe across fork).

A holder that died (killed, crashed, idle-exited) is replaced transparently: a request that
could not be delivered starts a new holder and is sent there (one more login). A request that
was in flight when the holder died may or may not have run on the cluster, so it raises
TransportError like a dropped SSH connection does, except reads, which are re-sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dagster_hpc import errors, progress
from dagster_hpc.transport import _holder_wire as wire
from dagster_hpc.transport import _shell
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.base import CommandResult, Transport
from dagster_hpc.transport.watch import RemoteWatchMixin

# Starting a holder is a Python start-up plus imports (~0.5 s; seconds on a loaded machine).
HOLDER_START_TIMEOUT_S = 60.0
# Another process may be starting the holder right now: wait for it a little longer than that.
START_LOCK_TIMEOUT_S = HOLDER_START_TIMEOUT_S + 10.0
# Extra time a client waits for an answer beyond the command's own timeout (the holder may have
# to log in first).
ANSWER_MARGIN_S = 10.0
# A read lost with a dying holder is sent again up to this many times in all, pausing a moment
# in between: a SIGKILLed holder's socket can accept one more connection before it is closed.
READ_ATTEMPTS = 3
READ_RESEND_PAUSE_S = 0.1
# How much of a command an error message quotes (a watch script is long).
QUOTED_COMMAND_CHARS = 200

_CODE_DIGEST: str | None = None


def _code_digest() -> str:
    """A digest of the holder's code: a client never talks to a holder running other code."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        here = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for name in ("holder.py", "_holder_wire.py", "ssh.py", "auth.py"):
            h.update((here / name).read_bytes())
        _CODE_DIGEST = h.hexdigest()[:16]
    return _CODE_DIGEST


class _Undelivered(Exception):
    """The holder could not be reached: the request never left this process."""


class _Lost(Exception):
    """The holder went away after the request was sent."""


class HolderTransport(RemoteWatchMixin, Transport):
    """Reach a login node through the machine's shared connection holder (module docstring)."""

    _read_kwargs = {"resend_if_lost": True}  # noqa: RUF012 - reads and watches only read: re-send them

    def __init__(self, target: SSHTarget) -> None:
        if not isinstance(target, SSHTarget):
            raise errors.ConfigError(
                f"HolderTransport needs an SSHTarget, got {type(target).__name__}"
            )
        wire.target_to_json(target)  # validates (no otp_callback)
        self.target = target
        self.directory = wire.holder_dir()
        self.key = wire.holder_key(target, _code_digest())
        self.socket_path = wire.socket_path(self.directory, self.key)
        self.log_path = self.directory / f"h-{self.key}.log"
        self._lock_path = self.directory / f"h-{self.key}.lock"
        self.holders_started = 0  # by this object (tests)

    # --- reaching the holder ---------------------------------------------------------------
    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise _Undelivered(str(exc)) from exc
        return sock

    def _connect(self) -> socket.socket:
        """A socket to a live holder, starting one if there is none."""
        try:
            return self._open()
        except _Undelivered:
            pass
        try:
            with FileLock(str(self._lock_path), timeout=START_LOCK_TIMEOUT_S):
                try:
                    return self._open()  # another process started it while we waited
                except _Undelivered:
                    self._start_holder()
                return self._open()
        except Timeout as exc:
            raise errors.TransportError(
                f"waited {START_LOCK_TIMEOUT_S:.0f} s for another process to start the connection "
                f"holder for {self.target.label}; see {self.log_path}"
            ) from exc
        except _Undelivered as exc:
            raise errors.TransportError(
                f"the connection holder for {self.target.label} started but does not answer on "
                f"{self.socket_path}: {exc}; see {self.log_path}"
            ) from exc

    def _start_holder(self) -> None:
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dagster_hpc.transport.holder", str(self.socket_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # outlives the step that started it; no Ctrl-C from us
                close_fds=True,
            )
        finally:
            os.close(log)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(wire.target_to_json(self.target)).encode() + b"\n")
        proc.stdin.close()  # secrets go through this pipe, never argv or the environment
        ready, _, _ = select.select([proc.stdout], [], [], HOLDER_START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if not line.startswith(b"ready"):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise errors.TransportError(
                f"the connection holder for {self.target.label} did not start within "
                f"{HOLDER_START_TIMEOUT_S:.0f} s: see {self.log_path}"
            )
        self.holders_started += 1

    def _send(self, header: dict[str, Any], stdin: bytes | None = None) -> socket.socket:
        """Deliver one request (starting a holder if needed); returns the socket to read from."""
        for attempt in (1, 2):
            sock = self._connect()
            try:
                wire.send_json(sock, header)
                if stdin is not None:
                    wire.send_frame(sock, stdin)
                return sock
            except (BrokenPipeError, ConnectionResetError) as exc:
                sock.close()  # the holder died between accept and our write: never delivered
                if attempt == 2:
                    raise errors.TransportError(
                        f"the connection holder for {self.target.label} keeps going away: see {self.log_path}"
                    ) from exc
        raise AssertionError("unreachable")

    def _recv(self, sock: socket.socket, wait: float | None, what: str) -> bytes:
        """One answer frame; _Lost when the holder went away, TransportError after ``wait``."""
        sock.settimeout(wait)
        try:
            return wire.recv_frame(sock)
        except (EOFError, ConnectionResetError) as exc:
            raise _Lost(str(exc)) from exc
        except TimeoutError as exc:
            raise errors.TransportError(
                f"no answer within {wait:.0f} s from the connection holder for {self.target.label}: "
                f"{what}\nhint: see {self.log_path}"
            ) from exc

    def _ask(self, header: dict[str, Any], what: str, wait: float | None = None) -> dict[str, Any]:
        """A request answered by one JSON frame (put_file, info)."""
        with self._send(header) as sock:
            try:
                head = json.loads(self._recv(sock, wait, what))
            except _Lost:
                raise self._lost(what) from None
        _raise_if_error(head)
        return head

    def _lost(self, what: str) -> errors.TransportError:
        return errors.TransportError(
            f"the connection holder for {self.target.label} went away while running: {what}\n"
            "It may or may not have taken effect, so it is not re-run automatically; the next "
            f"command starts a new holder (see {self.log_path})."
        )

    # --- the interface ----------------------------------------------------------------------
    def connect(self) -> None:
        """Reach (or start) the holder and make sure it is logged in: surfaces auth errors early."""
        self.run("true", timeout=self.target.connect_timeout * 3)

    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        code, out, err = self._run_bytes(command, timeout=timeout, stdin=stdin)
        return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _run_bytes(
        self,
        command: str,
        *,
        timeout: float | None,
        stdin: bytes | None,
        resend_if_lost: bool = False,
    ) -> tuple[int, bytes, bytes]:
        if timeout is not None and timeout <= 0:
            raise errors.ConfigError(
                f"timeout must be > 0 seconds, got {timeout} (command: {_brief(command)})"
            )
        header = {"op": "run", "command": command, "timeout": timeout, "stdin": stdin is not None}
        wait = None if timeout is None else timeout + self.target.connect_timeout + ANSWER_MARGIN_S
        what = _brief(command)
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                with self._send(header, stdin) as sock:
                    head = json.loads(self._recv(sock, wait, what))
                    _raise_if_error(head)
                    out, err = self._recv(sock, wait, what), self._recv(sock, wait, what)
            except _Lost as exc:
                if resend_if_lost and attempt < READ_ATTEMPTS:
                    time.sleep(READ_RESEND_PAUSE_S)
                    continue  # a read has no effect: ask the next holder
                raise self._lost(what) from exc
            self._count(1, len(stdin or b""))
            return int(head["exit"]), out, err
        raise AssertionError("unreachable")

    def stream(self, command: str, *, timeout: float | None = None) -> Iterator[bytes]:
        """stdout chunks as the remote command writes them (one channel in the holder)."""
        if timeout is not None and timeout <= 0:
            raise errors.ConfigError(
                f"timeout must be > 0 seconds, got {timeout} (command: {command})"
            )
        sock = self._send({"op": "stream", "command": command, "timeout": timeout})
        self._count(1)
        with sock:  # leaving early closes the socket: the holder ends the remote command
            while True:
                try:
                    frame = self._recv(sock, None, command)
                except _Lost:
                    raise self._lost(command) from None
                tag, body = frame[:1], frame[1:]
                if tag == wire.TAG_DATA:
                    yield body
                    continue
                end = json.loads(body)
                _raise_if_error(end)
                return

    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        data = _shell.tar_directory(Path(local_dir))
        code, _out, err = self._run_bytes(
            _shell.untar_command(remote_dir, mode), timeout=None, stdin=data
        )
        if code != 0:
            raise errors.TransportError(
                f"unpacking {local_dir} into {remote_dir} on {self.target.label} failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-500:]}\nhint: check that the parent directory is "
                "writable and the disk is not full"
            )
        return len(data)

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o600) -> int:
        """The holder (same user, same machine) reads the file itself and streams it over SFTP."""
        local_path = Path(local_path).resolve()
        if not local_path.is_file():
            raise errors.ConfigError(f"cannot upload {local_path}: not a file")
        header = {"op": "put_file", "local": str(local_path), "remote": remote_path, "mode": mode}
        report = progress.bound(f"upload {local_path.name}", local_path.stat().st_size)
        report(0)  # the holder streams it: start and end only
        head = self._ask(header, f"upload of {local_path} to {remote_path}")
        self._count(2, int(head["sent"]))
        report(int(head["sent"]))
        return int(head["sent"])

    # --- observability and control ----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The holder's pid, logins made and source ports (starts a holder if none runs)."""
        return self._ask({"op": "info"}, "info", wait=ANSWER_MARGIN_S)

    @property
    def authentications(self) -> int:
        """Logins made by the CURRENT holder (a replaced holder's logins are not counted here)."""
        return int(self.info()["authentications"])

    @property
    def local_ports(self) -> list[int]:
        """Source ports of the current holder's authenticated connections (sshd log lines)."""
        return [int(p) for p in self.info()["local_ports"]]

    @property
    def attempt_ports(self) -> list[int]:
        return [int(p) for p in self.info()["attempt_ports"]]

    def shutdown_holder(self) -> bool:
        """Ask a running holder to log out and exit; False when none was running."""
        try:
            sock = self._open()
        except _Undelivered:
            return False
        with sock:
            wire.send_json(sock, {"op": "shutdown"})
            with contextlib.suppress(EOFError, OSError, ValueError):
                wire.recv_json(sock)
        deadline = time.monotonic() + HOLDER_START_TIMEOUT_S
        while self.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Nothing to release per process: the holder outlives it (it exits when idle)."""

    def __repr__(self) -> str:
        return f"HolderTransport({self.target.label})"


def _brief(command: str) -> str:
    if len(command) <= QUOTED_COMMAND_CHARS:
        return command
    return command[:QUOTED_COMMAND_CHARS] + f"... ({len(command)} characters)"


def _raise_if_error(head: dict[str, Any]) -> None:
    name = head.get("error")
    if name is None:
        return
    if name == "RemoteCommandError":
        raise errors.RemoteCommandError(
            head["command"], int(head["exit_code"]), head["stdout"], head["stderr"]
        )
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.DagsterHpcError)):
        cls = errors.TransportError
    raise cls(head.get("message", "connection holder error"))


def shutdown_all(directory: Path) -> int:
    """Ask every holder with a socket in ``directory`` to exit (tests; a clean shutdown)."""
    stopped = 0
    for sock_path in sorted(Path(directory).glob("h-*.sock")):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(sock_path))
            wire.send_json(sock, {"op": "shutdown"})
            wire.recv_json(sock)
            stopped += 1
        except (OSError, EOFError, ValueError):
            continue  # already gone
        finally:
            sock.close()
    return stopped
