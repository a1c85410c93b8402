"""Ship an environment to the cluster once, and find it again with one round trip.

Remote layout under ``<remote_base>/envs/`` (all 0700):

    <key>/               a published entry (see ``manifest``), never modified after publishing
    .lock-<key>          flock'ed by publishers (and by ``env gc`` before removing <key>)
    .incoming/<key>.*    uploads in flight (each uploader its own name)
    .tmp-<key>-*         entries being unpacked and installed

Lookup (one round trip, zero bytes uploaded): check the entry (manifest, interpreter, tree
digest, ``import dagster_pipes``) and touch its last-used stamp. On a miss or a corrupt
entry: build locally (or reuse the local bundle cache), upload to a private name, then ONE
remote script takes the key's flock, re-checks (another run may have published meanwhile),
moves a corrupt entry aside, unpacks into a tmp dir, runs the install step, writes the digest
and the manifest last, and renames the tmp dir into place. Concurrent runs therefore either
see no entry or a complete one, never half of one.
"""

from __future__ import annotations

import shlex
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster_hpc.envs import build as build_mod
from dagster_hpc.envs.build import BuildPlan, Bundle
from dagster_hpc.envs.manifest import (
    ACTIVATE,
    CORRUPT,
    HIT,
    LAST_USED,
    MANIFEST,
    MANIFEST_PENDING,
    MISS,
    TREE_DIGEST,
    check_shell,
    tree_digest_shell,
)
from dagster_hpc.errors import ConfigError, EnvBuildError, TransportError
from dagster_hpc.rundir import remote_path_expr
from dagster_hpc.transport.base import Transport

# A lookup runs find + sha256sum over a few thousand names and starts Python once.
LOOKUP_TIMEOUT_S = 60.0
# Waiting for another run that is publishing the same key (unpack + offline install of a
# large env on a slow shared filesystem takes minutes); beyond this, give up with a hint.
PUBLISH_LOCK_WAIT_S = 900
# The publish script itself: lock wait + unpack + install.
PUBLISH_TIMEOUT_S = PUBLISH_LOCK_WAIT_S + 900.0
# Time limit (minutes) of the srun step that installs on a compute node: an offline install of
# a few hundred MB; generous because a slow shared filesystem dominates.
INSTALL_TIME_LIMIT_MIN = 30
INSTALL_ON = ("auto", "login", "compute")
# Another run is publishing the same key when its upload in .incoming changed within this many
# minutes (an SFTP upload rewrites its file continuously) or it holds the key's lock. Then we
# wait for it instead of uploading the same bytes again (8 steps starting together on a cold
# cache would otherwise upload 8 copies), polling every BUSY_POLL_S, at most BUSY_WAIT_S.
FRESH_UPLOAD_MIN = 1
BUSY_POLL_S = 2.0
BUSY_WAIT_S = float(PUBLISH_LOCK_WAIT_S)
ENVS_DIR = "envs"


@dataclass(frozen=True)
class EnvRef:
    """A verified environment on the cluster: what job scripts use."""

    key: str
    path: str  # the entry directory
    python: str  # absolute interpreter path
    activate: str  # absolute path of activate.sh ('' if the environment has none)


@dataclass(frozen=True)
class ShipReport:
    """What ``ensure`` did: for logs, benchmarks and tests."""

    ref: EnvRef
    status: str  # 'hit' (already there), 'published', 'published-by-other' (lost the race)
    lookup_status: str  # the first check's line: HIT, MISS or 'CORRUPT <reason>'
    bytes_uploaded: int
    roundtrips: int
    build_s: float
    seconds: float


def envs_root_expr(remote_base: str) -> str:
    """Shell expression for ``<remote_base>/envs`` (``~/x`` -> ``"$HOME"/x/envs``), quoted."""
    remote_path_expr(remote_base, setting="remote_base")  # validates before anything is appended
    return remote_path_expr(envs_root(remote_base), setting="remote_base")


def envs_root(remote_base: str) -> str:
    """``<remote_base>/envs`` as text (for messages; may start with ~)."""
    return f"{remote_base.rstrip('/')}/{ENVS_DIR}"


def entry_dir(remote_base: str, key: str) -> str:
    return f"{envs_root(remote_base)}/{key}"


def lookup_command(remote_base: str, key: str, python_relpath: str, arch: str | None = None) -> str:
    """One round trip: print HIT / MISS / CORRUPT <reason>, then ROOT=<absolute envs dir>,
    ARCH=<the login node's machine>, ZSTD=<1 if it can decompress zstd> and BUSY=<1 if another
    run is uploading or publishing this key right now>.

    A hit also stamps last-used; a miss creates the envs dir (0700) for the upload to come.
    """
    # "busy" is observed BEFORE the entry is checked: a publisher that finishes in between is
    # then seen as a HIT, never as "missing and nobody busy" (which would upload it again)
    return (
        f'root={envs_root_expr(remote_base)}; d="$root"/{key}; busy=0; '
        f'if [ -d "$root" ] && {{ [ -n "$(find "$root/.incoming" -maxdepth 1 -name {key}.\\* '
        f'-mmin -{FRESH_UPLOAD_MIN} 2>/dev/null)" ] || ! (exec 9>>"$root/.lock-{key}"; flock -n 9); }}; '
        "then busy=1; fi; "
        f"s=$({check_shell('d', python_relpath, arch)}); "
        f'if [ "$s" = {HIT} ]; then touch "$d/{LAST_USED}" 2>/dev/null; busy=0; '
        'else (umask 077 && mkdir -p "$root/.incoming" && chmod 700 "$root") || exit 1; fi; '
        'echo "$s"; cd "$root" && echo "ROOT=$(pwd -P)" && echo "ARCH=$(uname -m)" && '
        "if command -v zstd >/dev/null 2>&1; then echo ZSTD=1; else echo ZSTD=0; fi && "
        'echo "BUSY=$busy"'
    )


def compute_node_runner(partition: str | None = None, options: Sequence[str] = ()) -> str:
    """Prefix that runs a command on a compute node (install + check where the login node
    cannot run the target's binaries, e.g. an x86 login node in front of aarch64 nodes)."""
    parts = [
        "srun",
        "--job-name=dagster-hpc-env-install",
        "--nodes=1",
        "--ntasks=1",
        f"--time={INSTALL_TIME_LIMIT_MIN}",
        "--quiet",
    ]
    if partition:
        parts.append(f"--partition={partition}")
    parts += list(options)
    return " ".join(shlex.quote(x) for x in parts)


def publish_script(root: str, p: BuildPlan, upload: str, token: str, *, runner: str = "") -> str:
    """The remote half of a publish, for the absolute envs dir ``root`` (pure; see the module
    docstring for the protocol). ``runner`` (e.g. ``compute_node_runner()``) runs the install
    step and the final check somewhere else than the login node."""
    q = shlex.quote
    tmp = f"{root}/.tmp-{p.key}-{token}"
    trash = f"{root}/.trash-{p.key}-{token}"
    at = f"{runner} " if runner else ""
    # gzip and plain tar are detected by every GNU tar; zstd is named explicitly
    untar_option = "--use-compress-program=zstd " if upload.endswith(".zst") else ""
    install_body = q('cd "$1" && ' + p.install_shell)
    check_body = q('d="$1"; ' + check_shell("d", p.python_relpath))
    install = f'{at}sh -c {install_body} sh "$tmp"' if p.install_shell else "true"
    final_check = f'{at}sh -c {check_body} sh "$tmp"'
    return "\n".join(
        [
            "set -eu",
            "umask 077",
            f"root={q(root)}; d={q(root + '/' + p.key)}; up={q(upload)}; tmp={q(tmp)}",
            'cleanup() { rm -rf "$tmp"; rm -f "$up"; }',
            "trap cleanup EXIT",
            f'exec 9>"$root/.lock-{p.key}"',
            f"flock -w {PUBLISH_LOCK_WAIT_S} 9 || {{ echo 'timed out waiting for the env lock' >&2; exit 75; }}",
            f"s=$({check_shell('d', p.python_relpath, p.platform.arch)})",
            f'if [ "$s" = {HIT} ]; then echo ALREADY; exit 0; fi',
            f'if [ -e "$d" ]; then mv "$d" {q(trash)}; rm -rf {q(trash)}; fi',
            'mkdir -m 700 "$tmp"',
            f'tar {untar_option}-xf "$up" -C "$tmp"',
            'chmod 700 "$tmp"',  # tar restores the archive root's mode (0755) onto $tmp
            'rm -f "$up"',
            install,
            f"digest=$({tree_digest_shell('tmp')})",
            f'echo "$digest" > "$tmp/{TREE_DIGEST}"',
            f'mv "$tmp/{MANIFEST_PENDING}" "$tmp/{MANIFEST}"',
            f"s=$({final_check})",
            f'if [ "$s" != {HIT} ]; then echo "the new environment fails its own check: $s" >&2; exit 3; fi',
            'mv -T "$tmp" "$d"',
            "trap - EXIT",
            "echo PUBLISHED",
        ]
    )


def _ref(root: str, p: BuildPlan) -> EnvRef:
    d = f"{root}/{p.key}"
    return EnvRef(key=p.key, path=d, python=f"{d}/{p.python_relpath}", activate=f"{d}/{ACTIVATE}")


# Once an entry is verified in this process, later runs skip even the lookup (DESIGN step 2).
_verified: dict[tuple[str, str, str], EnvRef] = {}
_verified_lock = threading.Lock()


def forget_verified() -> None:
    """Drop the per-process memo (tests; or after removing entries by hand)."""
    with _verified_lock:
        _verified.clear()


@dataclass(frozen=True)
class Lookup:
    status: str  # HIT | MISS | 'CORRUPT <reason>'
    root: str  # absolute envs dir on the cluster
    login_arch: str  # `uname -m` of the login node
    zstd: bool = False  # the login node has zstd (bundles may be zstd-compressed)
    busy: bool = False  # another run is uploading or publishing this key


class EnvShipper:
    """Runtime object (never stored on a Dagster resource): one transport, one remote base.

    ``install_on``: where the install step (wheelhouse/pack) and the final check run: on the
    login node, on a compute node via ``srun``, or ``auto`` (a compute node only when the
    login node's architecture differs from the target's).
    """

    def __init__(
        self,
        transport: Transport,
        remote_base: str,
        *,
        cluster: str = "",
        cache_dir: Path | None = None,
        install_on: str = "auto",
        partition: str | None = None,
        slurm_options: Sequence[str] = (),
    ):
        envs_root_expr(remote_base)  # validates
        if install_on not in INSTALL_ON:
            raise ConfigError(f"install_on={install_on!r}: use one of {', '.join(INSTALL_ON)}")
        self.transport = transport
        self.remote_base = remote_base
        self.cluster = cluster
        self.cache_dir = cache_dir
        self.install_on = install_on
        self.partition = partition
        self.slurm_options = tuple(slurm_options)

    def look(self, p: BuildPlan) -> Lookup:
        """One round trip: the entry's status, the absolute envs dir, the login node's arch."""
        cmd = lookup_command(self.remote_base, p.key, p.python_relpath, p.platform.arch)
        result = self.transport.run(cmd, timeout=LOOKUP_TIMEOUT_S)
        lines = result.stdout.strip().splitlines()
        found = {
            k: v
            for k, _, v in (ln.partition("=") for ln in lines[-4:])
            if k in ("ROOT", "ARCH", "ZSTD", "BUSY")
        }
        status = lines[-5] if len(lines) >= 5 else ""
        root = found.get("ROOT", "")
        if (
            not result.ok
            or not root.startswith("/")
            or not (status in (HIT, MISS) or status.startswith(CORRUPT))
        ):
            raise TransportError(
                f"looking up environment {p.key} under {envs_root(self.remote_base)} failed "
                f"(exit {result.exit_code}): {result.stderr.strip()[-500:]}\n"
                "hint: check that the remote base directory is writable (dagster-hpc doctor)"
            )
        return Lookup(
            status, root, found.get("ARCH", ""), found.get("ZSTD") == "1", found.get("BUSY") == "1"
        )

    def lookup(self, p: BuildPlan) -> tuple[str, str]:
        """(HIT | MISS | 'CORRUPT <reason>', absolute envs dir): one round trip."""
        found = self.look(p)
        return found.status, found.root

    def runner_for(self, p: BuildPlan, login_arch: str) -> str:
        on_compute = self.install_on == "compute" or (
            self.install_on == "auto" and login_arch != p.platform.arch
        )
        return compute_node_runner(self.partition, self.slurm_options) if on_compute else ""

    def publish(self, bundle: Bundle, root: str, *, runner: str = "") -> tuple[str, int]:
        """Upload ``bundle`` and publish it under the key's lock; returns (status, bytes)."""
        p = bundle.plan
        token = uuid.uuid4().hex[:12]
        upload = f"{root}/.incoming/{p.key}.{token}.{bundle.archive.name.split('.', 1)[1]}"
        sent = self.transport.put_file(bundle.archive, upload, mode=0o600)
        result = self.transport.run(
            publish_script(root, p, upload, token, runner=runner), timeout=PUBLISH_TIMEOUT_S
        )
        if not result.ok:
            raise EnvBuildError(
                f"publishing environment {p.key} ({p.kind}) to {root}/{p.key} "
                f"failed with exit code {result.exit_code}\n--- stderr (tail) ---\n"
                f"{result.stderr.strip()[-1500:]}\n"
                "hint: exit 75 means another run held the env lock too long; otherwise check disk "
                "space/quota under the remote base and run `dagster-hpc env push` to see the full output"
            )
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        return ("published-by-other" if last == "ALREADY" else "published"), sent

    def ensure(self, p: BuildPlan) -> ShipReport:
        """The entry for ``p`` on the cluster: verified, published if needed."""
        started = time.monotonic()
        memo_key = (self.cluster, self.remote_base, p.key)
        with _verified_lock:
            cached = _verified.get(memo_key)
        if cached is not None:
            return ShipReport(
                cached, "hit", "HIT (verified earlier in this process)", 0, 0, 0.0, 0.0
            )
        rt0 = self.transport.roundtrips
        bytes0 = self.transport.bytes_sent
        found = self.look(p)
        first_status = found.status
        waited_until = time.monotonic() + BUSY_WAIT_S
        while found.status != HIT and found.busy and time.monotonic() < waited_until:
            time.sleep(BUSY_POLL_S)  # another run is shipping this very key: let it finish
            found = self.look(p)
        status, root = found.status, found.root
        build_s, uploaded = 0.0, 0
        if status == HIT and first_status != HIT:
            outcome = "published-by-other"
        elif status == HIT:
            outcome = "hit"
        else:
            compression = build_mod.default_compression(p.kind, remote_zstd=found.zstd)
            bundle = build_mod.build(p, cache_dir=self.cache_dir, compression=compression)
            build_s = bundle.built_s
            outcome, uploaded = self.publish(
                bundle, root, runner=self.runner_for(p, found.login_arch)
            )
        ref = _ref(root, p)
        with _verified_lock:
            _verified[memo_key] = ref
        counted = self.transport.bytes_sent - bytes0
        return ShipReport(
            ref,
            outcome,
            first_status,
            counted if counted else uploaded,
            self.transport.roundtrips - rt0,
            build_s,
            time.monotonic() - started,
        )
