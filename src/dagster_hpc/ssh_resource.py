"""SSHConnectionResource: how Dagster code describes the way to a cluster's login node.

The resource only describes; ``get_transport()`` returns the Transport that does the work:
``HolderTransport`` (the default: asyncssh in one local holder process that every process of
the machine shares, so a deployment logs in once), ``SSHTransport`` (asyncssh, one login per
process: ``connection_holder=False``) or ``OpenSSHTransport`` (the
system ssh with a ControlMaster shared by every process: interactive OTP, Kerberos, short-lived
certificates; log in once with ``dagster-hpc login``).

Secrets (password, TOTP secret) should be given as ``dg.EnvVar(...)`` so Dagster shows the
variable's name, never its value; ``from_env`` does exactly that.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from dagster_hpc._strict import StrictResource, refuse_unknown_env
from dagster_hpc.errors import ConfigError
from dagster_hpc.settings import env_names, read_env
from dagster_hpc.transport.auth import HostKeyPolicy, SSHTarget, parse_jump_hosts
from dagster_hpc.transport.base import Transport

TransportKind = Literal["asyncssh", "openssh"]
TRANSPORTS: tuple[str, ...] = ("asyncssh", "openssh")
DEFAULT_ENV_PREFIX = "DAGSTER_HPC_SSH"
# Variables read by from_env(prefix): {prefix}_{suffix} -> field name.
ENV_FIELDS: dict[str, str] = env_names(
    (
        "host",
        "port",
        "user",
        "key_path",
        "certificate_path",
        "use_agent",
        "password",
        "totp_secret",
        "jump_hosts",
        "known_hosts_file",
        "host_key_policy",
        "ssh_config_file",
        "transport",
        "control_dir",
        "control_persist",
        "require_login",
        "connection_holder",
    ),
    # the names before one-name-per-setting (documented, still read)
    aliases={
        "CERT_PATH": "certificate_path",
        "KNOWN_HOSTS": "known_hosts_file",
        "SSH_CONFIG": "ssh_config_file",
    },
)
_SECRET_FIELDS = ("password", "totp_secret")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _resolve(value: str | None) -> str | None:
    """A field given as dg.EnvVar outside a Dagster run still holds the variable name: read it."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


class SSHConnectionResource(StrictResource):
    """The way to a login node: host, credentials, jump hosts, host-key policy, transport kind."""

    host: str = Field(description="Login node: host name, address or ~/.ssh/config alias.")
    port: int | None = Field(
        default=None, description="SSH port (default: ~/.ssh/config, then 22)."
    )
    user: str | None = Field(
        default=None, description="Remote user (default: ~/.ssh/config, then the local user)."
    )
    key_path: str | None = Field(
        default=None, description="Private key file (default: agent and ~/.ssh/id_*)."
    )
    certificate_path: str | None = Field(
        default=None, description="OpenSSH certificate for the key (short-lived certs)."
    )
    use_agent: bool = Field(default=True, description="Offer keys held by ssh-agent.")
    # repr=False: a secret given as a plain string still never reaches a log line through repr()
    password: str | None = Field(
        default=None, repr=False, description="Password; give it as dg.EnvVar('...')."
    )
    totp_secret: str | None = Field(
        default=None,
        repr=False,
        description="Base32 TOTP secret answering 'Verification code' prompts; dg.EnvVar('...').",
    )
    jump_hosts: list[str] = Field(
        default_factory=list, description="Jump hosts in order, each user@host:port (as ssh -J)."
    )
    known_hosts_file: str | None = Field(
        default=None, description="known_hosts file (default ~/.ssh/known_hosts)."
    )
    host_key_policy: HostKeyPolicy = Field(
        default="strict", description="'strict' (default) or 'accept-new' (trust on first use)."
    )
    ssh_config_file: str | None = Field(
        default=None, description="ssh config file (default ~/.ssh/config)."
    )
    transport: TransportKind = Field(
        default="asyncssh",
        description="'asyncssh' (default) or 'openssh' (system ssh + ControlMaster).",
    )
    control_dir: str | None = Field(
        default=None, description="openssh: directory of the ControlMaster sockets."
    )
    control_persist: str = Field(
        default="8h", description="openssh: how long an idle master stays up (ssh ControlPersist)."
    )
    require_login: bool = Field(
        default=False,
        description="openssh: never log in from a step; use the master opened by `dagster-hpc login` (interactive OTP sites).",
    )
    connect_timeout: float = Field(
        default=30.0, description="Seconds for connect + authenticate, per hop."
    )
    connection_holder: bool = Field(
        default=True,
        description="asyncssh: every process of this machine shares ONE login through a small "
        "local holder process (one login per deployment); False: one login per process.",
    )

    @classmethod
    def from_env(cls, prefix: str = DEFAULT_ENV_PREFIX) -> SSHConnectionResource:
        """Build from ``{prefix}_HOST``, ``{prefix}_PORT``, ... (see ENV_FIELDS).

        Secrets become ``dg.EnvVar`` references, so their values never appear in Dagster's UI.
        """
        if not prefix or not prefix.replace("_", "").isalnum():
            raise ConfigError(
                f"bad environment prefix {prefix!r}: use letters, digits and _ (e.g. DAGSTER_HPC_SSH)"
            )
        refuse_unknown_env(prefix, ENV_FIELDS)
        kwargs: dict[str, object] = {}
        for field, (name, raw) in read_env(prefix, ENV_FIELDS).items():
            if field in _SECRET_FIELDS:
                kwargs[field] = dg.EnvVar(name)
            elif field == "port":
                if not raw.isdigit():
                    raise ConfigError(f"{name}={raw!r} is not a port number")
                kwargs[field] = int(raw)
            elif field in ("use_agent", "require_login", "connection_holder"):
                if raw.lower() not in _TRUE + _FALSE:
                    raise ConfigError(f"{name}={raw!r}: use 1/0, true/false, yes/no")
                kwargs[field] = raw.lower() in _TRUE
            elif field == "jump_hosts":
                kwargs[field] = [h.strip() for h in raw.split(",") if h.strip()]
            else:
                kwargs[field] = raw
        if "host" not in kwargs:
            raise ConfigError(
                f"{prefix}_HOST is not set: export it (the login node's name or a ~/.ssh/config alias)"
            )
        return cls(**kwargs)

    def to_target(self) -> SSHTarget:
        """The validated connection description (raises ConfigError on bad input, before connecting)."""
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"unknown SSH transport {self.transport!r}: use 'asyncssh' or 'openssh'"
            )
        return SSHTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            key_paths=(self.key_path,) if self.key_path else (),
            certificate_path=self.certificate_path,
            use_agent=self.use_agent,
            password=_resolve(self.password),
            totp_secret=_resolve(self.totp_secret),
            jump_hosts=parse_jump_hosts(self.jump_hosts),
            known_hosts=self.known_hosts_file,
            host_key_policy=self.host_key_policy,
            ssh_config=self.ssh_config_file,
            connect_timeout=self.connect_timeout,
        )

    def get_transport(self) -> Transport:
        """The Transport for this connection (by default one login shared by every process here)."""
        target = self.to_target()
        if self.transport == "openssh":
            from dagster_hpc.transport.openssh import OpenSSHTransport

            return OpenSSHTransport(
                target,
                control_dir=self.control_dir,
                control_persist=self.control_persist,
                require_login=self.require_login,
            )
        if self.connection_holder:
            from dagster_hpc.transport.holder_client import HolderTransport

            return HolderTransport(target)
        from dagster_hpc.transport.ssh import SSHTransport

        return SSHTransport(target)
