"""The connection holder: one small local process owning one authenticated asyncssh connection.

Dagster's multiprocess executor runs every step in its own process; with one SSH connection per
process, 8 assets cost 8 logins (8 one-time codes on an OTP site, and sites block accounts that
open many sessions). Instead the first process that needs the cluster starts this holder
(``HolderTransport`` does it, under a file lock) and every process of the machine with the
same settings talks to it over a Unix socket in a user-private 0700 directory. Commands still
run as concurrent channels of ONE asyncssh connection, so each costs about what it costs in
process (a few ms), plus a local socket hop.

The holder logs in with non-interactive credentials only (key, agent, certificate, password,
TOTP secret): nobody is there to type a code. It re-opens a dropped connection like
``SSHTransport`` does, exits after ``HOLDER_IDLE_EXIT_S`` without requests, and exits when its
socket was replaced (another holder took over). A killed holder is replaced by the next
request of any client (one more login); see ``holder_client``.

Run as ``python -m dagster_hpc.transport.holder SOCKET`` with the target as JSON on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dagster_hpc.errors import DagsterHpcError, RemoteCommandError, TransportError
from dagster_hpc.transport import _holder_wire as wire
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

# Without any request for this long the holder logs out and exits: an idle deployment should
# not keep a session open on the login node forever; the next request starts a new holder
# (one login). 15 minutes covers the gaps of a schedule running every few minutes.
HOLDER_IDLE_EXIT_S = 900.0
# How often the watchdog checks idleness and whether the socket is still ours.
WATCHDOG_INTERVAL_S = 2.0
# accept() wakes this often to notice a stop request.
ACCEPT_POLL_S = 1.0
# Pending connections the kernel queues while every handler thread is busy (8-64 step
# processes, each with a reader, a poller and a main thread).
LISTEN_BACKLOG = 256


def error_frame(exc: BaseException) -> dict[str, Any]:
    """An exception as the client re-raises it (same class for our errors, same message)."""
    if isinstance(exc, RemoteCommandError):
        return {
            "error": "RemoteCommandError",
            "command": exc.command,
            "exit_code": exc.exit_code,
            "stdout": exc.stdout,
            "stderr": exc.stderr,
        }
    name = type(exc).__name__ if isinstance(exc, DagsterHpcError) else "TransportError"
    return {"error": name, "message": str(exc) or type(exc).__name__}


class Holder:
    """Serves requests of local clients over one SSH connection (one thread per request)."""

    def __init__(self, target: SSHTarget, sock_path: Path) -> None:
        self.transport = SSHTransport(target, share=False)
        self.sock_path = sock_path
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._active = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._inode: int | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def serve(self, ready: Any) -> str:
        old_umask = os.umask(0o077)
        try:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()  # a dead holder's socket (we hold the start lock)
            server.bind(str(self.sock_path))
        finally:
            os.umask(old_umask)
        os.chmod(self.sock_path, 0o600)
        self._inode = os.stat(self.sock_path).st_ino
        server.listen(LISTEN_BACKLOG)
        server.settimeout(ACCEPT_POLL_S)
        reason: list[str] = []
        threading.Thread(target=self._watchdog, args=(reason,), daemon=True).start()
        ready(os.getpid())
        while not self._stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        server.close()
        if self._socket_is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()
        with contextlib.suppress(TransportError, OSError):
            self.transport.close()
        return reason[0] if reason else "stopped"

    def stop(self) -> None:
        self._stop.set()

    def _socket_is_ours(self) -> bool:
        try:
            return os.stat(self.sock_path).st_ino == self._inode
        except FileNotFoundError:
            return False

    def _watchdog(self, reason: list[str]) -> None:
        while not self._stop.wait(WATCHDOG_INTERVAL_S):
            with self._lock:
                idle = self._active == 0 and time.monotonic() - self._last > HOLDER_IDLE_EXIT_S
            if idle:
                reason.append(f"idle for {HOLDER_IDLE_EXIT_S:.0f} s")
            elif not self._socket_is_ours():
                reason.append("the socket was replaced by another holder")
            else:
                continue
            self._stop.set()

    # --- one request ---------------------------------------------------------------------------
    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self._active += 1
        try:
            with conn:
                uid = wire.peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    return  # the 0700 directory should make this impossible: refuse silently
                self._dispatch(conn, wire.recv_json(conn))
        except (EOFError, OSError, ValueError):
            pass  # the client went away (or sent garbage): nothing to answer
        finally:
            with self._lock:
                self._active -= 1
                self._last = time.monotonic()

    def _dispatch(self, conn: socket.socket, req: dict[str, Any]) -> None:
        op = req.get("op")
        if op == "stream":
            self._stream(conn, req)
            return
        try:
            answer = self._answer(conn, op, req)
        except (DagsterHpcError, OSError) as exc:
            answer = error_frame(exc)
        wire.send_json(conn, answer["head"] if "head" in answer else answer)
        for blob in answer.get("blobs", ()):
            wire.send_frame(conn, blob)

    def _answer(self, conn: socket.socket, op: Any, req: dict[str, Any]) -> dict[str, Any]:
        t = self.transport
        if op == "run":
            stdin = wire.recv_frame(conn) if req.get("stdin") else None
            code, out, err = t._run_bytes(req["command"], timeout=req.get("timeout"), stdin=stdin)
            return {"head": {"exit": code}, "blobs": (out, err)}
        if op == "put_file":
            sent = t.put_file(Path(req["local"]), req["remote"], mode=int(req["mode"]))
            return {"sent": sent}
        if op == "info":
            return {
                "pid": os.getpid(),
                "started_at": self.started_at,
                "authentications": t.authentications,
                "local_ports": t.local_ports,
                "attempt_ports": t.attempt_ports,
                "roundtrips": t.roundtrips,
            }
        if op == "shutdown":
            self._stop.set()
            return {"ok": True}
        return {"error": "TransportError", "message": f"connection holder: unknown request {op!r}"}

    def _stream(self, conn: socket.socket, req: dict[str, Any]) -> None:
        chunks = self.transport.stream(req["command"], timeout=req.get("timeout"))
        try:
            for chunk in chunks:
                wire.send_frame(conn, wire.TAG_DATA + chunk)  # a gone client raises here: stop
            end: dict[str, Any] = {"exit": 0}
        except (DagsterHpcError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, TransportError):
                chunks.close()  # the client went away: end the remote command's channel
                raise
            end = error_frame(exc)
        wire.send_frame(
            conn, (wire.TAG_ERROR if "error" in end else wire.TAG_END) + json.dumps(end).encode()
        )


def _log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} dagster-hpc holder {os.getpid()}: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dagster_hpc.transport.holder SOCKET < target.json", file=sys.stderr)
        return 2
    target = wire.target_from_json(json.loads(sys.stdin.readline()))
    holder = Holder(target, Path(argv[0]))
    signal.signal(signal.SIGTERM, lambda *_: holder.stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the Dagster process is not ours

    def ready(pid: int) -> None:
        print(f"ready {pid}", flush=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the starter stops reading: never block on stdout
        os.close(devnull)
        _log(f"serving {target.label} on {argv[0]}")

    reason = holder.serve(ready)
    _log(f"exiting ({reason}) after {holder.transport.authentications} login(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
