"""The environment content key: equal inputs give equal keys; every input that changes the
environment's contents changes the key."""

from __future__ import annotations

import pytest

from dagster_hpc.envs.key import KEY_HEX_CHARS, env_key
from dagster_hpc.envs.platform import TargetPlatform
from dagster_hpc.errors import ConfigError

PLAT = TargetPlatform(arch="x86_64", glibc="2.28", python="3.11")
BASE = dict(
    lock_bytes=b"lock-v1",
    python="3.11.7",
    platform=PLAT,
    kind="self-contained",
    extra_packages=("dagster-pipes==1.13.27",),
)


def test_key_is_stable_and_short():
    assert env_key(**BASE) == env_key(**BASE)
    assert len(env_key(**BASE)) == KEY_HEX_CHARS
    assert all(c in "0123456789abcdef" for c in env_key(**BASE))


@pytest.mark.parametrize(
    "change",
    [
        {"lock_bytes": b"lock-v2"},
        {"python": "3.11.8"},
        {"platform": TargetPlatform(arch="aarch64", glibc="2.28", python="3.11")},
        {"platform": TargetPlatform(arch="x86_64", glibc="2.17", python="3.11")},
        {"kind": "wheelhouse"},
        {"extra_packages": ("dagster-pipes==1.13.28",)},
        {"kind": "pack", "pack_command": ("pixi-pack", "{lock}")},
    ],
)
def test_every_input_changes_the_key(change):
    assert env_key(**{**BASE, **change}) != env_key(**BASE)


def test_node_python_path_and_extras_order_do_not_change_the_key():
    other = TargetPlatform(
        arch="x86_64", glibc="2.28", python="3.11", node_python="/opt/py/bin/python3"
    )
    assert env_key(**{**BASE, "platform": other}) == env_key(**BASE)
    two = ("a==1", "b==2")
    assert env_key(**{**BASE, "extra_packages": two}) == env_key(
        **{**BASE, "extra_packages": two[::-1]}
    )


def test_bad_inputs_are_rejected():
    with pytest.raises(ConfigError, match="unknown bundle kind 'conda'"):
        env_key(**{**BASE, "kind": "conda"})
    with pytest.raises(ConfigError, match="lock file is empty"):
        env_key(**{**BASE, "lock_bytes": b""})
