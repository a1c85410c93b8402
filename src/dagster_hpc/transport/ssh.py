"""SSHTransport: one authenticated asyncssh connection per login node and process.

Every command, upload and file read of a process goes over that one connection as its own
channel (channels run concurrently). Sites that count logins see one per process, not one per
command. The connection lives on a background event loop (``_loop``); the methods here block
and are thread-safe.

A dropped connection is re-opened with backoff on the next use. A command is re-sent only when
its channel could not even be opened (so it never started); a command that was running when
the connection dropped raises instead, because it may already have had its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh

from dagster_hpc import progress
from dagster_hpc.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    RemoteCommandError,
    TransportError,
)
from dagster_hpc.transport import _loop, _shell
from dagster_hpc.transport.auth import JumpHost, SSHTarget
from dagster_hpc.transport.base import CommandResult, Transport
from dagster_hpc.transport.hostkeys import (
    describe_host_key_failure,
    ensure_known_hosts_file,
    trust_on_first_use,
)
from dagster_hpc.transport.watch import RemoteWatchMixin

# Waits before each connection attempt after the connection dropped: quick first, then backing
# off so a rebooting login node is not hammered (~30 s in total covers a sshd restart or a
# short network blip; a longer outage surfaces as an error the caller can retry).
RECONNECT_BACKOFF_S: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# The very first connection of a process: one quick retry only, so a wrong host or port is
# reported within seconds instead of after the whole reconnect budget.
FIRST_CONNECT_BACKOFF_S: tuple[float, ...] = (0.0, 1.0)
# Keepalives detect a silently dead connection (NAT timeout, login node reboot) within
# ~KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT_MAX instead of hanging on it until TCP gives up.
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 4
# A server re-asking keyboard-interactive questions after we answered means our answer was
# wrong; we stop after this many rounds rather than guess again (sites lock accounts for that).
MAX_KBDINT_ROUNDS = 2
# Upload chunk: large enough to keep the SFTP pipe full, small enough to stream big files.
SFTP_CHUNK_BYTES = 1 << 20
# stream(): read size per chunk, and how much of stderr is kept for the error message.
STREAM_CHUNK_BYTES = 64 << 10
STDERR_TAIL_BYTES = 64 << 10
# Exit code reported when the remote command was killed by a signal (what OpenSSH's client does).
SIGNALLED_EXIT_CODE = 255

_CONNECTION_ERRORS = (OSError, asyncssh.Error, TimeoutError)


class _Client(asyncssh.SSHClient):
    """Answers keyboard-interactive prompts from the target's secrets; reports a dropped connection."""

    def __init__(self, target: SSHTarget, owner: _SharedConnection, is_target: bool) -> None:
        self._target = target
        self._owner = owner
        self._is_target = is_target
        self._rounds = 0
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn
        sock = conn.get_extra_info("sockname")
        if self._is_target and sock:
            self._owner.attempt_ports.append(int(sock[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        # only a connection still in use counts: a replaced one may report its end late
        if self._conn is not None and self._owner.uses(self._conn):
            self._owner.lost = True

    def kbdint_auth_requested(self) -> str | None:
        t = self._target
        return "" if (t.can_answer_otp or t.password is not None) else None

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        if not prompts:  # an informational banner: nothing to answer
            return []
        self._rounds += 1
        if self._rounds > MAX_KBDINT_ROUNDS:
            return None
        # a user callback may block (e.g. ask a human): keep the event loop free meanwhile
        return await asyncio.get_running_loop().run_in_executor(
            None, self._target.answer_prompts, list(prompts)
        )


class _SharedConnection:
    """The one connection (plus its jump hops) to one target, re-opened on demand. Loop-thread only."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.lost = False
        self.authentications = 0
        self.local_ports: list[
            int
        ] = []  # source port of each authenticated connection to the target
        self.attempt_ports: list[int] = []  # source port of every attempt (also refused ones)
        self.auth_failure: AuthenticationError | None = None
        self._conns: list[asyncssh.SSHClientConnection] = []  # jump hops first, target last
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def is_open(self) -> bool:
        return bool(self._conns) and not self.lost

    def uses(self, conn: asyncssh.SSHClientConnection) -> bool:
        return any(c is conn for c in self._conns)

    async def connection(self) -> asyncssh.SSHClientConnection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.auth_failure is not None:
                # sticky: the same credentials would be refused again, and sites lock accounts
                # after a few failures (a poller calling every few seconds would get there fast)
                raise AuthenticationError(
                    f"{self.target.label}: not trying again in this process, the server already refused "
                    f"these credentials:\n{self.auth_failure}"
                )
            if not self.is_open:
                await self._close_all()
                try:
                    await self._connect_with_backoff()
                except AuthenticationError as exc:
                    self.auth_failure = exc
                    raise
            return self._conns[-1]

    async def sftp(self) -> asyncssh.SFTPClient:
        conn = await self.connection()
        if self._sftp is None:
            self._sftp = await conn.start_sftp_client()
        return self._sftp

    async def _connect_with_backoff(self) -> None:
        delays = RECONNECT_BACKOFF_S if self.authentications else FIRST_CONNECT_BACKOFF_S
        last: BaseException | None = None
        for delay in delays:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._connect_once()
                return
            except (
                AuthenticationError,
                HostKeyError,
            ):  # never retried; drop jump hops already open
                await self._close_all()
                raise
            except _CONNECTION_ERRORS as exc:
                last = exc
                await self._close_all()
        raise TransportError(
            f"could not connect to {self.target.label} ({len(delays)} attempts over {sum(delays):.0f} s): "
            f"{type(last).__name__}: {last}\nhint: check that the host and port are right and "
            "reachable from here (try `ssh -v` with the same settings)"
        ) from last

    async def _connect_once(self) -> None:
        self.lost = False
        tunnel: asyncssh.SSHClientConnection | None = None
        t = self.target
        for hop in t.jump_hosts:
            tunnel = await self._open(
                hop.host, hop.port, hop.user or t.user, tunnel, f"jump host {hop}", False
            )
            self._conns.append(tunnel)
        conn = await self._open(t.host, t.port, t.user, tunnel, t.label, True)
        self._conns.append(conn)
        sock = conn.get_extra_info("sockname")
        if sock:
            self.local_ports.append(int(sock[1]))

    async def _open(
        self,
        host: str,
        port: int | None,
        user: str | None,
        tunnel: asyncssh.SSHClientConnection | None,
        label: str,
        is_target: bool,
    ) -> asyncssh.SSHClientConnection:
        t = self.target
        if t.host_key_policy == "accept-new":
            ensure_known_hosts_file(t)
        kwargs: dict[str, object] = {
            "known_hosts": os.path.expanduser(t.known_hosts) if t.known_hosts else (),
            "config": [os.path.expanduser(t.ssh_config)] if t.ssh_config else (),
            "connect_timeout": t.connect_timeout,
            "login_timeout": t.connect_timeout,
            "keepalive_interval": KEEPALIVE_INTERVAL_S,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            "kbdint_auth": True,
            "client_factory": lambda: _Client(t, self, is_target),
        }
        if port is not None:
            kwargs["port"] = port
        if user is not None:
            kwargs["username"] = user
        if tunnel is not None:
            kwargs["tunnel"] = tunnel
        if t.key_paths:
            kwargs["client_keys"] = [os.path.expanduser(k) for k in t.key_paths]
        if t.certificate_path:
            kwargs["client_certs"] = [os.path.expanduser(t.certificate_path)]
        if not t.use_agent:
            kwargs["agent_path"] = None
        if t.password is not None:
            kwargs["password"] = t.password
        for attempt in (1, 2):
            try:
                conn = await asyncssh.connect(host, **kwargs)
                self.authentications += is_target
                return conn
            except asyncssh.PermissionDenied as exc:
                raise AuthenticationError(
                    f"{label}: the server refused our credentials ({self._offered()}); "
                    "not retried, so the account is not locked by a retry storm.\nhint: check the "
                    "user name, key and password; for one-time codes check the TOTP secret and this "
                    f"machine's clock (codes are time-based). Server said: {exc.reason}"
                ) from exc
            except asyncssh.HostKeyNotVerifiable as exc:
                if attempt == 1 and t.host_key_policy == "accept-new":
                    if await trust_on_first_use(host, port, t, tunnel):
                        continue
                raise HostKeyError(
                    describe_host_key_failure(host, port, t, str(exc.reason))
                ) from exc
        raise AssertionError("unreachable")

    def _offered(self) -> str:
        t = self.target
        parts = []
        if t.key_paths:
            parts.append("key " + ", ".join(t.key_paths))
        elif t.use_agent:
            parts.append("agent/default keys")
        if t.certificate_path:
            parts.append("certificate")
        if t.password is not None:
            parts.append("password")
        if t.totp_secret is not None:
            parts.append("TOTP code")
        elif t.otp_callback is not None:
            parts.append("one-time code from the callback")
        return "offered: " + ("; ".join(parts) or "nothing")

    async def _close_all(self) -> None:
        self._sftp = None
        for conn in reversed(self._conns):
            conn.close()
        self._conns = []

    async def close(self) -> None:
        conns = list(self._conns)
        await self._close_all()
        for conn in conns:
            await conn.wait_closed()


_pool_lock = threading.Lock()
_pool: dict[SSHTarget, tuple[int, _SharedConnection]] = {}


def _shared(target: SSHTarget) -> _SharedConnection:
    with _pool_lock:
        entry = _pool.get(target)
        if entry is None or entry[0] != os.getpid():
            entry = (os.getpid(), _SharedConnection(target))
            _pool[target] = entry
        return entry[1]


def close_all_connections() -> None:
    """Close every pooled connection of this process (tests, and a clean shutdown)."""
    with _pool_lock:
        entries = [c for pid, c in _pool.values() if pid == os.getpid()]
        _pool.clear()
    for conn in entries:
        _loop.call(conn.close(), timeout=10)


class SSHTransport(RemoteWatchMixin, Transport):
    """Reach a login node over asyncssh (see module docstring).

    ``SSHTransport(SSHTarget(host=..., user=..., key_paths=(...,)))``. Transports built from equal
    targets in one process share one connection (``share=False`` gives a private one).
    """

    def __init__(self, target: SSHTarget, *, share: bool = True) -> None:
        if not isinstance(target, SSHTarget):
            raise ConfigError(f"SSHTransport needs an SSHTarget, got {type(target).__name__}")
        self.target = target
        self._shared = _shared(target) if share else _SharedConnection(target)
        self._private = not share

    # --- counters (round trips and bytes: Transport._count) --------------------------------
    @property
    def authentications(self) -> int:
        """Successful logins to the target made by this transport's connection (1 unless it reconnected)."""
        return self._shared.authentications

    @property
    def local_ports(self) -> list[int]:
        """Source ports of the authenticated connections so far (they identify our sshd log lines)."""
        return list(self._shared.local_ports)

    @property
    def attempt_ports(self) -> list[int]:
        """Source ports of every connection attempt to the target, refused ones included."""
        return list(self._shared.attempt_ports)

    # --- the interface --------------------------------------------------------------------
    def connect(self) -> None:
        """Open (or reuse) the connection now: surfaces auth and host-key errors early."""
        _loop.call(self._shared.connection(), timeout=self.target.connect_timeout * 3)

    def run(
        self, command: str, *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        code, out, err = self._run_bytes(command, timeout=timeout, stdin=stdin)
        return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _run_bytes(
        self, command: str, *, timeout: float | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout} (command: {command})")
        wait = None if timeout is None else timeout + self.target.connect_timeout
        result = _loop.call(self._arun(command, timeout, stdin), timeout=wait)
        self._count(1, len(stdin or b""))
        return result

    async def _open_process(self, command: str) -> asyncssh.SSHClientProcess:
        shared = self._shared
        for attempt in (1, 2):
            conn = await shared.connection()
            try:
                return await conn.create_process(command, encoding=None)
            except (
                asyncssh.ChannelOpenError,
                asyncssh.ConnectionLost,
                BrokenPipeError,
                ConnectionError,
            ) as exc:
                # the session never opened, so the command never started: safe to reconnect and re-send
                shared.lost = True
                if attempt == 2:
                    raise TransportError(
                        f"could not open a session on {self.target.label} for: {command}\n{exc}\n"
                        "hint: the connection dropped twice in a row; check the login node"
                    ) from exc
        raise AssertionError("unreachable")

    async def _arun(
        self, command: str, timeout: float | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        shared = self._shared
        proc = await self._open_process(command)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError as exc:
            proc.close()
            raise TransportError(
                f"command timed out after {timeout} s on {self.target.label}: {command}\n"
                "hint: raise the timeout, or check whether the login node is overloaded"
            ) from exc
        except (
            asyncssh.DisconnectError,
            asyncssh.ConnectionLost,
            BrokenPipeError,
            ConnectionError,
        ) as exc:
            shared.lost = True
            raise self._dropped(command) from exc
        status = proc.exit_status
        if status is None and proc.exit_signal is None:
            # the channel closed without an exit status: the connection went away under it
            shared.lost = True
            raise self._dropped(command)
        return (
            (SIGNALLED_EXIT_CODE if status is None or status < 0 else status),
            stdout or b"",
            stderr or b"",
        )

    def stream(self, command: str, *, timeout: float | None = None) -> Iterator[bytes]:
        """stdout chunks as the remote command writes them (one channel on the shared connection)."""
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout} (command: {command})")
        chunks: queue.Queue[tuple[str, object]] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._astream(command, chunks), _loop.get_loop())
        deadline = None if timeout is None else time.monotonic() + timeout
        self._count(1)
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    kind, value = chunks.get(timeout=wait)
                except queue.Empty:
                    raise TransportError(
                        f"command timed out after {timeout} s on {self.target.label}: {command}\n"
                        "hint: raise the timeout (it covers the whole stream)"
                    ) from None
                if kind == "data":
                    yield value  # type: ignore[misc]
                elif kind == "error":
                    raise value  # type: ignore[misc]
                else:
                    code, stderr = value  # type: ignore[misc]
                    if code != 0:
                        raise RemoteCommandError(
                            command, code, "", stderr.decode("utf-8", "replace")
                        )
                    return
        finally:
            if not future.done():  # stopped early: end the remote command's channel
                future.cancel()

    async def _astream(self, command: str, chunks: queue.Queue[tuple[str, object]]) -> None:
        try:
            proc = await self._open_process(command)
        except TransportError as exc:
            chunks.put(("error", exc))
            return
        stderr_tail = bytearray()

        async def drain_stderr() -> None:  # keep reading: an unread stderr would stall stdout
            while data := await proc.stderr.read(STREAM_CHUNK_BYTES):
                stderr_tail.extend(data)
                del stderr_tail[:-STDERR_TAIL_BYTES]

        try:
            proc.stdin.write_eof()
            err_task = asyncio.ensure_future(drain_stderr())
            while data := await proc.stdout.read(STREAM_CHUNK_BYTES):
                chunks.put(("data", data))
            await err_task
            await proc.wait_closed()
        except asyncio.CancelledError:
            # the consumer stopped early: ask the server to signal the command (OpenSSH >= 7.9
            # honours it), then close the channel (a command that still writes gets SIGPIPE)
            with contextlib.suppress(OSError, asyncssh.Error):
                proc.send_signal("TERM")
            proc.close()
            raise
        except (
            asyncssh.DisconnectError,
            asyncssh.ConnectionLost,
            BrokenPipeError,
            ConnectionError,
        ):
            self._shared.lost = True
            chunks.put(("error", self._dropped(command)))
            return
        status = proc.exit_status
        if status is None and proc.exit_signal is None:
            self._shared.lost = True
            chunks.put(("error", self._dropped(command)))
            return
        code = SIGNALLED_EXIT_CODE if status is None or status < 0 else status
        chunks.put(("end", (code, bytes(stderr_tail))))

    def _dropped(self, command: str) -> TransportError:
        return TransportError(
            f"the connection to {self.target.label} dropped while running: {command}\n"
            "It may or may not have taken effect, so it is not re-run automatically; the next "
            "command reconnects."
        )

    def put_tree(self, local_dir: Path, remote_dir: str, *, mode: int = 0o700) -> int:
        data = _shell.tar_directory(Path(local_dir))
        code, _out, err = self._run_bytes(
            _shell.untar_command(remote_dir, mode), timeout=None, stdin=data
        )
        if code != 0:
            raise TransportError(
                f"unpacking {local_dir} into {remote_dir} on {self.target.label} failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-500:]}\nhint: check that the parent directory is "
                "writable and the disk is not full"
            )
        return len(data)

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o600) -> int:
        local_path = Path(local_path)
        if not local_path.is_file():
            raise ConfigError(f"cannot upload {local_path}: not a file")
        tmp = _shell.temp_name(remote_path)
        size = local_path.stat().st_size
        what = f"upload {local_path.name}"
        _loop.call(self._aput(local_path, tmp, progress.bound(what, size)), timeout=None)
        self._count(1, size)
        self.check(
            _shell.publish_command(tmp, remote_path, mode),
            hint=f"uploading {local_path} to {remote_path}",
        )
        return size

    async def _aput(
        self, local_path: Path, tmp: str, report: Callable[[int], None] = lambda _done: None
    ) -> None:
        sftp = await self._shared.sftp()
        try:
            # created 0600 from its first byte (a plain put would briefly be world-readable)
            async with sftp.open(tmp, "wb", attrs=asyncssh.SFTPAttrs(permissions=0o600)) as remote:
                with local_path.open("rb") as fh:
                    report(0)
                    sent = 0
                    while chunk := fh.read(SFTP_CHUNK_BYTES):
                        await remote.write(chunk)
                        sent += len(chunk)
                        report(sent)  # progress bar / percent line (progress.py)
        except (asyncssh.SFTPError, OSError) as exc:
            raise TransportError(
                f"SFTP upload of {local_path} to {tmp} on {self.target.label} failed: {exc}\n"
                "hint: check that the remote directory exists and is writable"
            ) from exc

    def close(self) -> None:
        """Private connections close; a shared one stays for the process (see close_all_connections)."""
        if self._private:
            _loop.call(self._shared.close(), timeout=10)

    def __repr__(self) -> str:
        return f"SSHTransport({self.target.label})"


def quote_command(argv: list[str]) -> str:
    """argv -> one shell command string with every argument quoted."""
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["JumpHost", "SSHTarget", "SSHTransport", "close_all_connections", "quote_command"]
