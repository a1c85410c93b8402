"""Connection options shared by the SSH subcommands (doctor, login).

Settings come from ``{prefix}_*`` environment variables (the same ones as
``SSHConnectionResource.from_env``) and are overridden by command-line flags. Secrets (password,
TOTP secret) are read from the environment only, never from flags (flags show up in ``ps``).
"""

from __future__ import annotations

import argparse
import os

from dagster_hpc.errors import ConfigError
from dagster_hpc.ssh_resource import DEFAULT_ENV_PREFIX, SSHConnectionResource

_FLAG_FIELDS = {
    "port": "port",
    "user": "user",
    "key": "key_path",
    "jump": "jump_hosts",
    "known_hosts": "known_hosts_file",
    "ssh_config": "ssh_config_file",
    "control_dir": "control_dir",
    "persist": "control_persist",
    "transport": "transport",
}


def add_connection_arguments(parser: argparse.ArgumentParser, *, host_required: bool) -> None:
    parser.add_argument(
        "host", nargs=None if host_required else "?",
        help="login node (name, address or ~/.ssh/config alias); default: $PREFIX_HOST",
    )  # fmt: skip
    parser.add_argument("-p", "--port", type=int, help="SSH port")
    parser.add_argument("-l", "--user", help="remote user")
    parser.add_argument("-i", "--key", help="private key file")
    parser.add_argument(
        "-J", "--jump", help="jump hosts, comma-separated, each user@host:port (as ssh -J)"
    )
    parser.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    parser.add_argument(
        "--accept-new-host-key", action="store_true", help="trust a host seen for the first time"
    )
    parser.add_argument("--ssh-config", help="ssh config file (default ~/.ssh/config)")
    parser.add_argument(
        "--control-dir",
        help="openssh: directory of ControlMaster sockets (default ~/.ssh/dagster-hpc)",
    )
    parser.add_argument("--persist", help="openssh: idle time the master stays up (default 8h)")
    parser.add_argument(
        "--env-prefix", default=DEFAULT_ENV_PREFIX,
        help=f"read settings and secrets from PREFIX_HOST, PREFIX_PASSWORD, ... (default {DEFAULT_ENV_PREFIX})",
    )  # fmt: skip


def resource_from_args(args: argparse.Namespace, **overrides: object) -> SSHConnectionResource:
    """Environment first (if any), then flags on top."""
    from_env = bool(os.environ.get(f"{args.env_prefix}_HOST"))
    if not (from_env or args.host):
        raise ConfigError(f"no login node given: pass HOST or export {args.env_prefix}_HOST")
    base: dict[str, object] = (
        SSHConnectionResource.from_env(args.env_prefix).model_dump(exclude_unset=True)
        if from_env
        else {}
    )
    if args.host:
        base["host"] = args.host
    for flag, field in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            base[field] = [h for h in value.split(",") if h] if field == "jump_hosts" else value
    if args.accept_new_host_key:
        base["host_key_policy"] = "accept-new"
    base.update(overrides)
    return SSHConnectionResource(**base)
