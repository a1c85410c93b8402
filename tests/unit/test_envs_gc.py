"""env list / gc: parsing, choice of what to remove, and removal under the key's lock (transport
double running the remote shell locally)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from dagster_hpc.envs.gc import EnvEntry, choose_removals, gc, list_entries, remove_script
from dagster_hpc.envs.ship import EnvShipper, forget_verified
from tests.unit.envs_fakes import LocalShellTransport
from tests.unit.test_envs_ship import _plan


def _e(key: str, last: int, in_use: bool = False) -> EnvEntry:
    return EnvEntry(key=key, last_used=last, size_kb=1, complete=True, in_use=in_use)


def test_keeps_the_newest_and_those_in_use():
    entries = [_e("a" * 24, 5), _e("b" * 24, 4), _e("c" * 24, 3, in_use=True), _e("d" * 24, 2)]
    assert [e.key[0] for e in choose_removals(entries, keep=1)] == ["b", "d"]
    assert choose_removals(entries, keep=10) == []
    with pytest.raises(ValueError):
        choose_removals(entries, keep=-1)


def test_remove_script_refuses_non_keys():
    with pytest.raises(ValueError, match="not an environment key"):
        remove_script("/x", ["../../etc"])


@pytest.fixture
def three_entries(tmp_path, monkeypatch):
    project = tmp_path / "project" / "requirements.txt"
    project.parent.mkdir()
    project.write_text("polars==2.1.0\n")
    base = str(tmp_path / "remote")
    keys = []
    for i in range(3):
        forget_verified()
        r = EnvShipper(LocalShellTransport(), base, cache_dir=tmp_path / "cache").ensure(
            _plan(project, f" # {i}")
        )
        keys.append(r.ref.key)
        # publish time = last use until the first hit stamps .last-used
        os.utime(Path(r.ref.path) / "manifest.json", (1_000_000 + i, 1_000_000 + i))
    forget_verified()
    return base, keys


def test_list_newest_first_with_manifests(three_entries):
    base, keys = three_entries
    root, entries = list_entries(LocalShellTransport(), base)
    assert root.endswith("/remote/envs")
    assert [e.key for e in entries] == keys[::-1]
    assert all(e.complete and e.manifest["kind"] == "pack" and e.size_kb > 0 for e in entries)


def test_gc_removes_old_entries_and_skips_a_busy_one(three_entries):
    base, keys = three_entries
    dry = gc(LocalShellTransport(), base, keep=1, dry_run=True)
    assert dry["would_remove"] == [keys[1], keys[0]] and dry["removed"] == []
    root = Path(base) / "envs"
    with open(root / f".lock-{keys[0]}", "w") as lock:  # someone is publishing keys[0]
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = gc(LocalShellTransport(), base, keep=1)
    assert result["removed"] == [keys[1]] and result["busy"] == [keys[0]]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [keys[2], keys[0]]
    )
    assert not list(root.glob(".trash-*"))
    assert gc(LocalShellTransport(), base, keep=1)["removed"] == [keys[0]]


def test_gc_removes_day_old_leftovers_of_dead_publishers_only(three_entries):
    base, keys = three_entries
    root = Path(base) / "envs"
    old_upload, fresh_upload = root / ".incoming" / "dead.tar", root / ".incoming" / "live.tar"
    old_tmp, fresh_tmp = root / f".tmp-{keys[0]}-dead", root / f".tmp-{keys[0]}-live"
    for path in (old_upload, fresh_upload):
        path.write_bytes(b"x")
    for path in (old_tmp, fresh_tmp):
        (path / "bin").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    for path in (old_upload, old_tmp):
        os.utime(path, (two_days_ago, two_days_ago))
    result = gc(LocalShellTransport(), base, keep=10)
    assert sorted(result["stale"]) == sorted([str(old_upload), str(old_tmp)])
    assert (
        fresh_upload.exists()
        and fresh_tmp.exists()
        and not old_upload.exists()
        and not old_tmp.exists()
    )
    assert result["removed"] == [] and len(result["kept"]) == 3
