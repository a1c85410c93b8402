"""Who we are and whom we trust when reaching a login node: ``SSHTarget`` and answering prompts.

``SSHTarget`` is a frozen, hashable description of one connection (host, credentials, jump
chain, host-key policy); the SSH transports and ``SSHConnectionResource`` share it. Secrets
(password, TOTP secret) are excluded from ``repr`` so they never reach a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dagster_hpc.errors import ConfigError
from dagster_hpc.transport.totp import totp_code, validate_secret

HostKeyPolicy = Literal["strict", "accept-new"]
HOST_KEY_POLICIES: tuple[str, ...] = ("strict", "accept-new")

# How long to wait for TCP connect + SSH handshake + authentication of one hop. Login nodes
# under load can take several seconds to answer; past this, something is wrong with the route.
DEFAULT_CONNECT_TIMEOUT_S = 30.0

# A keyboard-interactive prompt is a password prompt when it says so; anything else (a
# "Verification code:", "OTP", "Passcode" or a site-specific text) is a one-time-code prompt.
_PASSWORD_PROMPT = re.compile(r"passw(or)?d", re.IGNORECASE)

# ``host``, ``user@host``, ``host:port``, ``user@host:port`` as in ssh's -J / ProxyJump.
_HOP = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class JumpHost:
    host: str
    port: int | None = None
    user: str | None = None

    @classmethod
    def parse(cls, spec: str) -> JumpHost:
        m = _HOP.match(spec.strip())
        if not m:
            raise ConfigError(
                f"bad jump host {spec!r}: expected host, user@host, host:port or user@host:port "
                "(as in ssh -J); separate several hops with commas"
            )
        return cls(m["host"], int(m["port"]) if m["port"] else None, m["user"])

    def __str__(self) -> str:
        return (
            (f"{self.user}@" if self.user else "")
            + self.host
            + (f":{self.port}" if self.port else "")
        )


@dataclass(frozen=True)
class SSHTarget:
    """One login node and how to authenticate to it (and to every jump host on the way).

    Fields left ``None`` come from ``~/.ssh/config`` (``ssh_config``) and then ssh's defaults.
    ``otp_callback(prompt) -> code`` answers one-time-code prompts when there is no
    ``totp_secret``; a password is only ever sent to a prompt that asks for a password.
    """

    host: str
    port: int | None = None
    user: str | None = None
    key_paths: tuple[str, ...] = ()
    certificate_path: str | None = None
    use_agent: bool = True
    password: str | None = field(default=None, repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    otp_callback: Callable[[str], str] | None = field(default=None, repr=False)
    jump_hosts: tuple[JumpHost, ...] = ()
    known_hosts: str | None = None
    host_key_policy: HostKeyPolicy = "strict"
    ssh_config: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host) or self.host.startswith("-"):
            raise ConfigError(
                f"bad SSH host {self.host!r}: give a host name, an address or a ~/.ssh/config alias"
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"bad SSH port {self.port}: must be 1-65535")
        if self.user is not None and (
            not self.user or self.user.startswith("-") or any(c.isspace() for c in self.user)
        ):
            raise ConfigError(f"bad SSH user {self.user!r}")
        if self.host_key_policy not in HOST_KEY_POLICIES:
            raise ConfigError(
                f"unknown host_key_policy {self.host_key_policy!r}: use 'strict' (default: the host "
                "must be in known_hosts) or 'accept-new' (trust a host seen for the first time)"
            )
        for p in self.key_paths:
            if not Path(os.path.expanduser(p)).is_file():
                raise ConfigError(
                    f"SSH key {p} does not exist: fix key_path or create it with ssh-keygen"
                )
        if self.certificate_path and not Path(os.path.expanduser(self.certificate_path)).is_file():
            raise ConfigError(f"SSH certificate {self.certificate_path} does not exist")
        if self.ssh_config and not Path(os.path.expanduser(self.ssh_config)).is_file():
            raise ConfigError(f"ssh config file {self.ssh_config} does not exist")
        if (
            self.known_hosts
            and self.host_key_policy == "strict"
            and not Path(os.path.expanduser(self.known_hosts)).is_file()
        ):
            raise ConfigError(
                f"known_hosts file {self.known_hosts} does not exist, so no host could be trusted: "
                "create it (ssh-keyscan -p PORT HOST >> FILE, after checking the fingerprint) "
                "or use host_key_policy='accept-new' once"
            )
        if self.totp_secret is not None:
            validate_secret(self.totp_secret)
        if self.connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, got {self.connect_timeout}")

    @property
    def label(self) -> str:
        """user@host:port for messages (no secrets)."""
        via = f" via {','.join(map(str, self.jump_hosts))}" if self.jump_hosts else ""
        return (
            (f"{self.user}@" if self.user else "")
            + self.host
            + (f":{self.port}" if self.port else "")
            + via
        )

    def answer_prompts(self, prompts: list[tuple[str, bool]]) -> list[str] | None:
        """Answers to one keyboard-interactive challenge, or None when we cannot answer it."""
        answers: list[str] = []
        for prompt, _echo in prompts:
            if _PASSWORD_PROMPT.search(prompt):
                if self.password is None:
                    return None
                answers.append(self.password)
            elif self.totp_secret is not None:
                answers.append(totp_code(self.totp_secret))
            elif self.otp_callback is not None:
                answers.append(str(self.otp_callback(prompt)).strip())
            else:
                return None
        return answers

    @property
    def can_answer_otp(self) -> bool:
        return self.totp_secret is not None or self.otp_callback is not None


def parse_jump_hosts(spec: str | list[str] | tuple[str, ...] | None) -> tuple[JumpHost, ...]:
    """'a,b:2223' or ['a', 'user@b'] -> hops in the order they are traversed."""
    if not spec:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(JumpHost.parse(s) for s in items if s.strip())
