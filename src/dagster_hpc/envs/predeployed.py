"""Pre-deployed environments: a path on the cluster used as is, but verified before submitting.

Sites often provide a shared environment (a module, a venv on a project filesystem). We do not
build or copy it; we check it in ONE round trip before any job is submitted, so a typo or a
missing package fails in seconds with a clear message instead of after a queue wait:

- the path exists and holds an executable interpreter (``bin/python``, ``env/bin/python``,
  ``venv/bin/python``, ``.venv/bin/python``, or the path itself / the ``python=`` given);
- the interpreter runs and imports ``dagster_pipes`` (the payload side of Dagster Pipes);
- if a dagster-hpc manifest is present, the file tree still matches its digest.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from dagster_hpc.envs.manifest import ACTIVATE, MANIFEST, TREE_DIGEST, tree_digest_shell
from dagster_hpc.envs.ship import EnvRef, compute_node_runner
from dagster_hpc.errors import ConfigError, TransportError
from dagster_hpc.transport.base import Transport

# One remote shell that starts Python twice; a slow shared filesystem may take seconds.
VERIFY_TIMEOUT_S = 60.0
INTERPRETER_CANDIDATES = ("bin/python", "env/bin/python", "venv/bin/python", ".venv/bin/python")
_IMPORT_CHECK = "import sys, dagster_pipes; print('%d.%d.%d' % sys.version_info[:3])"


@dataclass(frozen=True)
class PredeployedEnv:
    """``path``: directory (or interpreter) on the cluster; ``python``: interpreter inside it
    (relative to ``path`` or absolute) when it is not in one of the usual places."""

    path: str
    python: str | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError(
                f"pre-deployed env path {self.path!r} must be absolute on the cluster "
                "(e.g. /project/envs/payload)"
            )
        if any(c in self.path for c in "\n\0"):
            raise ConfigError(f"pre-deployed env path {self.path!r} contains a newline or NUL")


def verify_command(env: PredeployedEnv) -> str:
    """The one remote command that checks ``env`` and prints KEY=value lines (pure)."""
    q = shlex.quote
    if env.python:
        py_abs = (
            env.python if env.python.startswith("/") else f"{env.path.rstrip('/')}/{env.python}"
        )
        candidates = [py_abs]
    else:
        candidates = [env.path] + [f"{env.path.rstrip('/')}/{c}" for c in INTERPRETER_CANDIDATES]
    loop = " ".join(q(c) for c in candidates)
    return "\n".join(
        [
            f"p={q(env.path)}",
            'if [ ! -e "$p" ]; then echo STATUS=no-path; exit 0; fi',
            "py=",
            f'for c in {loop}; do if [ -f "$c" ] && [ -x "$c" ]; then py="$c"; break; fi; done',
            'if [ -z "$py" ]; then echo STATUS=no-python; exit 0; fi',
            'echo "PYTHON=$py"',
            f'out=$("$py" -c {q(_IMPORT_CHECK)} 2>&1); rc=$?',
            # 126: the kernel cannot execute it here (another CPU architecture than this node's)
            'if [ $rc -eq 126 ]; then echo STATUS=cannot-execute; echo "$out" | tail -n 2 | sed "s/^/ERR=/"; exit 0; fi',
            'if [ $rc -eq 0 ]; then echo "VERSION=$out"; '
            'else echo STATUS=no-pipes; echo "$out" | tail -n 3 | sed "s/^/ERR=/"; exit 0; fi',
            f'if [ -f "$p/{ACTIVATE}" ]; then echo "ACTIVATE=$p/{ACTIVATE}"; fi',
            f'if [ -f "$p/{MANIFEST}" ] && [ -f "$p/{TREE_DIGEST}" ]; then',
            f'  if [ "$(cat "$p/{TREE_DIGEST}")" = "$({tree_digest_shell("p")})" ]; '
            "then echo MANIFEST=ok; else echo STATUS=manifest-mismatch; exit 0; fi",
            "fi",
            "echo STATUS=ok",
        ]
    )


def _parse(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            found.setdefault(k, []).append(v)
    return found


_verified: dict[tuple[str, str, str | None], EnvRef] = {}
_lock = threading.Lock()


def _ask(
    transport: Transport, command: str, env: PredeployedEnv
) -> tuple[str, dict[str, list[str]], str]:
    result = transport.run(command, timeout=VERIFY_TIMEOUT_S)
    if not result.ok:
        raise TransportError(
            f"verifying the pre-deployed environment {env.path} failed (exit {result.exit_code}): "
            f"{result.stderr.strip()[-500:]}\nhint: check the connection with `dagster-hpc doctor`"
        )
    found = _parse(result.stdout)
    return (found.get("STATUS") or ["?"])[-1], found, result.stdout


def verify_predeployed(
    transport: Transport,
    env: PredeployedEnv,
    *,
    cluster: str = "",
    partition: str | None = None,
    slurm_options: Sequence[str] = (),
) -> EnvRef:
    """Check ``env`` on the cluster (one round trip, once per process); ConfigError if unusable.

    When the login node cannot execute the interpreter (compute nodes of another architecture),
    the same check runs once more inside a short ``srun`` step on a compute node.
    """
    memo = (cluster, env.path, env.python)
    with _lock:
        if memo in _verified:
            return _verified[memo]
    command = verify_command(env)
    status, found, stdout = _ask(transport, command, env)
    where = f"pre-deployed environment {env.path}"
    if status == "cannot-execute":
        runner = compute_node_runner(partition, slurm_options)
        status, found, stdout = _ask(transport, f"{runner} sh -c {shlex.quote(command)}", env)
        if status == "cannot-execute":
            raise ConfigError(
                f"{where}: {found['PYTHON'][0]} cannot be executed on the login node nor on a compute "
                f"node ({' '.join(found.get('ERR', []))}); nothing was submitted. hint: it was built for "
                "another CPU architecture or is damaged: rebuild it for the compute nodes"
            )
    if status == "no-path":
        raise ConfigError(
            f"{where} does not exist on the cluster: fix the path, or build one with `dagster-hpc env push`"
        )
    if status == "no-python":
        tried = env.python or ", ".join(INTERPRETER_CANDIDATES)
        raise ConfigError(
            f"{where} has no executable Python (looked for {tried}): set python= to its interpreter"
        )
    python = found["PYTHON"][0]
    if status == "no-pipes":
        err = "\n".join(found.get("ERR", []))
        raise ConfigError(
            f"{where}: {python} cannot import dagster_pipes, so payloads could not talk to Dagster; "
            f"nothing was submitted.\n{err}\nhint: install it there (`{python} -m pip install "
            "'dagster-pipes>=1.13,<1.14'`) or let dagster-hpc build the environment from your lock file"
        )
    if status == "manifest-mismatch":
        raise ConfigError(
            f"{where}: files changed since it was published (tree checksum mismatch with {MANIFEST}); "
            "it may be half-deleted or modified: re-publish it (`dagster-hpc env push`)"
        )
    if status != "ok":
        raise TransportError(f"unexpected answer while verifying {where}:\n{stdout[-800:]}")
    ref = EnvRef(key="", path=env.path, python=python, activate=(found.get("ACTIVATE") or [""])[0])
    with _lock:
        _verified[memo] = ref
    return ref
