"""SSH_ASKPASS helper for OpenSSHTransport: answers ssh's prompts from environment variables.

ssh runs ``$SSH_ASKPASS "<prompt>"`` and reads the answer from stdout. The secrets travel in the
environment of that one ssh process (never in argv, files or logs). A password goes only to a
password prompt; a one-time-code prompt gets a TOTP code; anything else (a host-key question,
a key passphrase) is declined, so ssh fails instead of trusting something silently.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
from pathlib import Path

from dagster_hpc.transport.totp import totp_code

PASSWORD_ENV = "DAGSTER_HPC_ASKPASS_PASSWORD"
TOTP_SECRET_ENV = "DAGSTER_HPC_ASKPASS_TOTP_SECRET"

_PASSWORD = re.compile(r"passw(or)?d:", re.IGNORECASE)
_DECLINE = re.compile(r"passphrase|yes/no|fingerprint|continue connecting", re.IGNORECASE)


def answer(prompt: str, env: dict[str, str]) -> str | None:
    """The answer to one prompt, or None to decline it."""
    if _DECLINE.search(prompt):
        return None
    if _PASSWORD.search(prompt):
        return env.get(PASSWORD_ENV)
    secret = env.get(TOTP_SECRET_ENV)
    return totp_code(secret) if secret else None


def write_helper(directory: Path) -> Path:
    """An executable that runs this module with the current interpreter (SSH_ASKPASS needs a path)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "askpass"
    text = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dagster_hpc.transport.askpass "$@"\n'
    if not path.exists() or path.read_text() != text:
        tmp = directory / f".askpass.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(stat.S_IRWXU)
        os.replace(tmp, path)
    return path


def main(argv: list[str]) -> int:
    prompt = argv[1] if len(argv) > 1 else ""
    reply = answer(prompt, dict(os.environ))
    if reply is None:
        print(f"dagster-hpc askpass: not answering the prompt {prompt.strip()!r}", file=sys.stderr)
        return 1
    sys.stdout.write(reply + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
