"""Host-key trust: explain a refused host key, and trust-on-first-use when explicitly asked.

Strict checking is the default: an unknown host is refused (with the command that trusts it),
and a CHANGED key is always refused, whatever the policy, because that is what an attack
looks like.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import asyncssh

from dagster_hpc.transport.auth import SSHTarget

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def known_hosts_path(target: SSHTarget) -> str:
    return target.known_hosts or DEFAULT_KNOWN_HOSTS


def ensure_known_hosts_file(target: SSHTarget) -> None:
    """accept-new may start from no file at all: create an empty private one to add keys to."""
    p = Path(os.path.expanduser(known_hosts_path(target)))
    if not p.exists():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        p.touch(mode=0o600)


def host_pattern(host: str, port: int | None) -> str:
    """How OpenSSH writes a host in known_hosts ([host]:port for a non-default port)."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def _known_keys(host: str, port: int | None, path: str) -> list[asyncssh.SSHKey]:
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        return []
    try:
        known = asyncssh.read_known_hosts(str(p))
    except (ValueError, OSError):
        return []
    return list(known.match(host, host, port)[0])


def describe_host_key_failure(host: str, port: int | None, target: SSHTarget, reason: str) -> str:
    path = known_hosts_path(target)
    q_path = shlex.quote(os.path.expanduser(path))
    where = f"{host}:{port}" if port else host
    if _known_keys(host, port, path):
        return (
            f"the host key of {where} has CHANGED: it no longer matches the entry in {path}. This is "
            "what a man-in-the-middle attack looks like, so we refuse to connect (whatever the "
            "host_key_policy).\nhint: if your site announced new host keys, verify the new "
            f"fingerprint with them, then remove the old entry: ssh-keygen -R {shlex.quote(host_pattern(host, port))} "
            f"-f {q_path}, and trust the new key. ({reason})"
        )
    scan = f"ssh-keyscan {'-p ' + str(port) + ' ' if port else ''}{shlex.quote(host)}"
    return (
        f"the host key of {where} is unknown: it is not in {path}, and host keys are checked "
        f"strictly.\nhint: check the fingerprint with your site (`{scan} | ssh-keygen -lf -`), then "
        f"trust it: {scan} >> {q_path} (or log in once with ssh and accept it), or set "
        f"host_key_policy='accept-new' to trust a host seen for the first time. ({reason})"
    )


async def trust_on_first_use(
    host: str, port: int | None, target: SSHTarget, tunnel: asyncssh.SSHClientConnection | None
) -> bool:
    """accept-new: record the key of a host that is NOT yet known; False if it is known (changed)."""
    path = known_hosts_path(target)
    if _known_keys(host, port, path):
        return False
    kwargs: dict[str, object] = {}
    if port is not None:
        kwargs["port"] = port
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    key = await asyncssh.get_server_host_key(host, **kwargs)
    if key is None:
        return False
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    line = f"{host_pattern(host, port)} {algorithm} {blob}"
    p = Path(os.path.expanduser(path))
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with p.open("a") as fh:
        fh.write(line + "\n")
    return True
