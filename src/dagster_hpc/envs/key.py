"""The content key of an environment: equal inputs -> equal key -> one cache entry on the cluster.

The key is computed BEFORE anything is built, from what determines the environment's
contents: the lock file's bytes, the Python version, the target platform, the bundle kind,
extra packages injected on top of the lock (dagster-pipes) and the pack command of a site
hook. So a cache hit costs no build, no upload, and one round trip to confirm.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from dagster_hpc.envs.platform import TargetPlatform
from dagster_hpc.errors import ConfigError

# Bump when the bundle layout or the publish protocol changes: old entries are then ignored
# (and eventually removed by `dagster-hpc env gc`).
KEY_FORMAT = 2  # 2: libcrypt bundled with self-contained interpreters
# Hex digits kept: 96 bits is plenty against accidental collisions and keeps paths short.
KEY_HEX_CHARS = 24

SELF_CONTAINED = "self-contained"
WHEELHOUSE = "wheelhouse"
PACK = "pack"
BUNDLE_KINDS = (SELF_CONTAINED, WHEELHOUSE, PACK)


def env_key(
    *,
    lock_bytes: bytes,
    python: str,
    platform: TargetPlatform,
    kind: str,
    extra_packages: Sequence[str] = (),
    pack_command: Sequence[str] = (),
) -> str:
    """A stable hex key over everything that determines the environment's contents."""
    if kind not in BUNDLE_KINDS:
        raise ConfigError(f"unknown bundle kind {kind!r}: use one of {', '.join(BUNDLE_KINDS)}")
    if not lock_bytes:
        raise ConfigError("the lock file is empty: run `uv lock` in the project first")
    doc = {
        "format": KEY_FORMAT,
        "lock_sha256": hashlib.sha256(lock_bytes).hexdigest(),
        "python": python,
        "platform": platform.key_parts(),
        "kind": kind,
        # order does not change what gets installed
        "extra_packages": sorted(extra_packages),
        "pack_command": list(pack_command),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_HEX_CHARS]
