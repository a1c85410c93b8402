"""What the connection holder and its clients share: the socket's place, its name, the framing.

Pure helpers plus the private directory check, so both sides agree without importing each
other. A request is one Unix-socket connection: the client sends a JSON header frame (and, for
commands with stdin, one bytes frame); the holder answers with frames (see ``holder.py``).
Frames are a 4-byte big-endian length and that many bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dagster_hpc.errors import ConfigError, TransportError
from dagster_hpc.transport.auth import JumpHost, SSHTarget

# Bumped whenever a frame's meaning changes; part of the holder's name, so a client never talks
# to a holder of another protocol (an older dagster-hpc still running on the same machine).
PROTOCOL = "1"
# Directory override (tests give each session its own; a site may prefer another private place).
DIR_ENV = "DAGSTER_HPC_HOLDER_DIR"
# Unix socket paths are limited to ~104 bytes (macOS) / 108 (Linux).
MAX_SOCKET_PATH = 100
# A frame larger than this is a bug or a foreign peer, not a command's output (4 MiB reads +
# base64 and a few MiB of stdout fit with room to spare).
MAX_FRAME_BYTES = 1 << 30

# Stream answers are frames of one tag byte and a payload: data, the end, or an error.
TAG_DATA, TAG_END, TAG_ERROR = b"d", b"e", b"x"

_LEN = struct.Struct(">I")


def holder_dir() -> Path:
    """The user-private (0700) directory of holder sockets; created if needed, verified always."""
    override = os.environ.get(DIR_ENV)
    if override:
        path = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "dagster-hpc"
    else:
        path = Path("/tmp") / f"dagster-hpc-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{path} must be a directory owned by you with mode 0700 (it holds the socket of the "
            f"shared SSH connection); it is not. Remove it, or point {DIR_ENV} to a private directory"
        )
    return path


def target_to_json(target: SSHTarget) -> dict[str, Any]:
    """Everything the holder needs to log in (secrets included: sent over a pipe, never argv)."""
    if target.otp_callback is not None:
        raise ConfigError(
            "a connection holder cannot call an otp_callback (it runs in its own process): give a "
            "totp_secret, or use SSHTransport in this process"
        )
    data = asdict(target)
    data.pop("otp_callback")
    data["jump_hosts"] = [asdict(h) for h in target.jump_hosts]
    data["key_paths"] = list(target.key_paths)
    return data


def target_from_json(data: dict[str, Any]) -> SSHTarget:
    data = dict(data)
    data["jump_hosts"] = tuple(JumpHost(**h) for h in data["jump_hosts"])
    data["key_paths"] = tuple(data["key_paths"])
    return SSHTarget(**data)


def holder_key(target: SSHTarget, code_digest: str) -> str:
    """One holder per (credentials, route, agent, holder code): every process derives the same name.

    The secrets are part of the digest (a changed password must not reuse a holder logged in
    with the old one); only a 16-hex prefix of it is stored, in a 0700 directory.
    """
    ident = json.dumps(target_to_json(target), sort_keys=True)
    agent = os.environ.get("SSH_AUTH_SOCK", "") if target.use_agent else ""
    raw = "\0".join((PROTOCOL, code_digest, ident, agent))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def socket_path(directory: Path, key: str) -> Path:
    path = directory / f"h-{key}.sock"
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"{path} is too long for a Unix socket: set {DIR_ENV} to a shorter private directory"
        )
    return path


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_LEN.pack(len(data)) + data)


def send_json(sock: socket.socket, obj: dict[str, Any]) -> None:
    send_frame(sock, json.dumps(obj).encode())


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf.extend(chunk)
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_FRAME_BYTES:
        raise TransportError(f"connection holder sent a frame of {n} bytes: not our protocol")
    return _recv_exact(sock, n)


def recv_json(sock: socket.socket) -> dict[str, Any]:
    return json.loads(recv_frame(sock))


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (Linux SO_PEERCRED), None where unsupported."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid
