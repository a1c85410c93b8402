"""The env cache protocol with the real shipping code against a transport double that runs the
remote shell locally: cold publish, warm hit (1 round trip, 0 bytes), corruption detected and
repaired, concurrent publishers, and a small real bundle from the ``pack`` hook."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from dagster_hpc.envs import build as build_mod
from dagster_hpc.envs.build import EnvSpec, plan
from dagster_hpc.envs.platform import TargetPlatform
from dagster_hpc.envs.ship import EnvShipper, entry_dir, forget_verified, publish_script
from dagster_hpc.errors import ConfigError, DagsterHpcError, EnvBuildError
from tests.unit.envs_fakes import LocalShellTransport

PLAT = TargetPlatform(arch="x86_64", glibc="2.36", python="3.11", node_python="/usr/bin/python3")
# A self-extracting file the pack hook writes: it creates env/bin/python, a wrapper around the
# interpreter running these tests (which has dagster_pipes), plus a data file.
_SELF_EXTRACTOR = (
    "printf '%s\\n' '#!/bin/sh' 'mkdir -p env/bin env/data' "
    f'\'printf "#!/bin/sh\\nexec {sys.executable} \\"\\$@\\"\\n" > env/bin/python\' '
    "'chmod 755 env/bin/python' 'echo payload-data > env/data/file.txt' > {output}"
)


@pytest.fixture(autouse=True)
def _fresh_memo():
    forget_verified()
    yield
    forget_verified()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    lock = tmp_path / "project" / "requirements.txt"
    lock.parent.mkdir()
    lock.write_text("polars==2.1.0\n")
    return lock


def _plan(lock: Path, marker: str = ""):
    spec = EnvSpec(lock, kind="pack", pack_command=("sh", "-c", _SELF_EXTRACTOR + marker))
    return plan(spec, PLAT)


def _shipper(tmp_path: Path, transport=None) -> EnvShipper:
    return EnvShipper(
        transport or LocalShellTransport(),
        str(tmp_path / "remote base"),
        cluster="test",
        cache_dir=tmp_path / "cache",
    )


def test_cold_publishes_then_warm_costs_one_round_trip_and_no_bytes(tmp_path, project):
    p = _plan(project)
    t = LocalShellTransport()
    cold = _shipper(tmp_path, t).ensure(p)
    assert cold.status == "published" and cold.lookup_status == "MISS"
    assert cold.bytes_uploaded >= build_mod.build(p, cache_dir=tmp_path / "cache").size > 0
    entry = Path(cold.ref.path)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"] == p.key and manifest["kind"] == "pack"
    assert "polars==2.1.0" in manifest["packages"] and any(
        x.startswith("dagster-pipes==") for x in manifest["packages"]
    )
    assert oct(entry.stat().st_mode & 0o777) == "0o700"
    assert oct(entry.parent.stat().st_mode & 0o777) == "0o700"
    assert (entry / "env" / "data" / "file.txt").read_text() == "payload-data\n"
    forget_verified()  # a new process
    before_rt, before_bytes = t.roundtrips, t.bytes_sent
    warm = _shipper(tmp_path, t).ensure(p)
    assert warm.status == "hit" and warm.lookup_status == "HIT"
    assert t.roundtrips - before_rt == 1 and t.bytes_sent - before_bytes == 0
    assert (entry / ".last-used").exists()
    again = _shipper(tmp_path, t).ensure(p)  # same process: not even a lookup
    assert again.roundtrips == 0 and t.roundtrips - before_rt == 1
    assert not list((entry.parent).glob(".tmp-*")) and not list(
        (entry.parent / ".incoming").iterdir()
    )


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda e: (e / "env" / "data" / "file.txt").unlink(), "tree checksum mismatch"),
        (lambda e: (e / "env" / "data" / "file.txt").write_text("x"), "tree checksum mismatch"),
        (lambda e: (e / "env" / "bin" / "python").unlink(), "interpreter env/bin/python missing"),
        (lambda e: (e / "manifest.json").unlink(), "manifest.json missing"),
    ],
)
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, project, damage, reason):
    p = _plan(project)
    first = _shipper(tmp_path).ensure(p)
    damage(Path(first.ref.path))
    forget_verified()
    s = _shipper(tmp_path)
    status, _root = s.lookup(p)
    assert status.startswith("CORRUPT") and reason in status
    repaired = s.ensure(p)
    assert repaired.status == "published" and reason in repaired.lookup_status
    assert s.lookup(p)[0] == "HIT"
    assert (Path(repaired.ref.path) / "env" / "data" / "file.txt").read_text() == "payload-data\n"


def test_concurrent_cold_publishers_leave_one_intact_entry(tmp_path, project):
    p = _plan(project)
    build_mod.build(p, cache_dir=tmp_path / "cache")  # both publishers upload the same archive
    reports, errors = [], []

    def publish():
        try:
            reports.append(_shipper(tmp_path).ensure(p))
        except DagsterHpcError as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    statuses = sorted(r.status for r in reports)
    # exactly one run unpacked; the others found it published (under the lock, or before)
    assert len(statuses) == 4 and statuses.count("published") == 1
    assert set(statuses) <= {"published", "published-by-other", "hit"}
    envs = Path(entry_dir(str(tmp_path / "remote base"), p.key)).parent
    assert [d.name for d in envs.iterdir() if not d.name.startswith(".")] == [p.key]
    assert not list(envs.glob(".tmp-*")) and not list(envs.glob(".trash-*"))
    assert _shipper(tmp_path).lookup(p)[0] == "HIT"


def test_pack_hook_errors_are_clear(tmp_path, project):
    with pytest.raises(ConfigError, match="needs pack_command"):
        plan(EnvSpec(project, kind="pack"), PLAT)
    for bad in ("/abs/bin/python", "../up/python", 'env/bin/py"$(id)"'):
        with pytest.raises(ConfigError, match="plain relative path"):
            plan(EnvSpec(project, kind="pack", pack_command=("true",), pack_python=bad), PLAT)
    bad = plan(EnvSpec(project, kind="pack", pack_command=("true", "{nope}")), PLAT)
    with pytest.raises(ConfigError, match="unknown placeholder"):
        build_mod.build(bad, cache_dir=tmp_path / "c")
    silent = plan(EnvSpec(project, kind="pack", pack_command=("true",)), PLAT)
    with pytest.raises(EnvBuildError, match="wrote no file"):
        build_mod.build(silent, cache_dir=tmp_path / "c")


def test_a_broken_bundle_is_never_published(tmp_path, project):
    # the pack output creates no interpreter: the publish step's own check refuses it
    p = plan(
        EnvSpec(project, kind="pack", pack_command=("sh", "-c", "echo 'mkdir env' > {output}")),
        PLAT,
    )
    with pytest.raises(
        EnvBuildError, match="(?s)fails its own check.*interpreter env/bin/python missing"
    ):
        _shipper(tmp_path).ensure(p)
    envs = Path(entry_dir(str(tmp_path / "remote base"), p.key)).parent
    assert not (envs / p.key).exists() and not list(envs.glob(".tmp-*"))


def test_relative_remote_base_rejected():
    with pytest.raises(ConfigError, match="must be an absolute path"):
        EnvShipper(LocalShellTransport(), "relative/.dagster-hpc")


def test_home_relative_remote_base_resolves_on_the_remote_side(tmp_path, project, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home dir"))  # the 'remote' shell's HOME
    (tmp_path / "home dir").mkdir()
    report = EnvShipper(
        LocalShellTransport(), "~/.dagster-hpc", cache_dir=tmp_path / "cache"
    ).ensure(_plan(project))
    assert report.ref.path == f"{tmp_path}/home dir/.dagster-hpc/envs/{report.ref.key}"
    assert Path(report.ref.python).exists()


def test_different_locks_get_different_entries(tmp_path, project):
    a = _shipper(tmp_path).ensure(_plan(project))
    project.write_text("polars==2.0.0\n")
    b = _shipper(tmp_path).ensure(_plan(project))
    assert a.ref.key != b.ref.key and os.path.isdir(a.ref.path) and os.path.isdir(b.ref.path)


def test_installs_move_to_a_compute_node_when_the_login_node_cannot_run_the_target(
    tmp_path, project
):
    p = _plan(project)  # target x86_64
    auto = _shipper(tmp_path)
    assert auto.runner_for(p, login_arch="x86_64") == ""
    runner = auto.runner_for(p, login_arch="aarch64")
    assert runner.startswith("srun ") and "--job-name=dagster-hpc-env-install" in runner
    forced = EnvShipper(LocalShellTransport(), "/x", install_on="compute", partition="gpu")
    assert "--partition=gpu" in forced.runner_for(p, login_arch="x86_64")
    script = publish_script("/r", p, "/r/.incoming/u", "tok", runner=runner)
    install_line = next(line for line in script.splitlines() if "pack.run" in line)
    assert install_line.startswith("srun ")
    # the lock-held re-check on the login node never runs a foreign interpreter
    assert '[ "$(uname -m)" = x86_64 ] && ! ' in script
    with pytest.raises(ConfigError, match="install_on='ssh'"):
        EnvShipper(LocalShellTransport(), "/x", install_on="ssh")


@pytest.mark.parametrize(
    "compression, suffix", [("none", ".tar"), ("gzip", ".tar.gz"), ("zstd", ".tar.zst")]
)
def test_every_archive_compression_unpacks_on_the_remote_side(
    tmp_path, project, compression, suffix
):
    import shutil as _sh

    if compression == "zstd" and not _sh.which("zstd"):
        pytest.skip("zstd not installed")
    p = _plan(project)
    bundle = build_mod.build(p, cache_dir=tmp_path / "cache", compression=compression)
    assert bundle.archive.name == p.key + suffix
    s = _shipper(tmp_path)
    status, root = s.lookup(p)
    assert status == "MISS"
    assert s.publish(bundle, root)[0] == "published"
    assert s.lookup(p)[0] == "HIT"
    assert (Path(root) / p.key / "env" / "data" / "file.txt").read_text() == "payload-data\n"
    with pytest.raises(ConfigError, match="unknown compression"):
        build_mod.build(p, cache_dir=tmp_path / "cache", compression="rar")


def test_a_run_waits_for_an_upload_in_flight_instead_of_uploading_again(
    tmp_path, project, monkeypatch
):
    import dagster_hpc.envs.ship as ship_mod

    monkeypatch.setattr(ship_mod, "BUSY_POLL_S", 0.05)
    p = _plan(project)
    bundle = build_mod.build(p, cache_dir=tmp_path / "cache")
    other = _shipper(tmp_path)
    _status, root = other.lookup(p)  # creates the envs dir
    in_flight = Path(root) / ".incoming" / f"{p.key}.abc.tar.part-123"
    in_flight.write_bytes(b"partial upload of another run")
    waiter_transport = LocalShellTransport()
    reports = []
    waiter = threading.Thread(
        target=lambda: reports.append(_shipper(tmp_path, waiter_transport).ensure(p))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while (
        waiter_transport.roundtrips < 2 and time.monotonic() < deadline
    ):  # it looked, saw BUSY, looked again
        time.sleep(0.02)
    assert waiter.is_alive() and waiter_transport.roundtrips >= 2
    assert other.publish(bundle, root)[0] == "published"  # the other run finishes its publish
    in_flight.unlink()
    waiter.join(timeout=10)
    assert (
        reports and reports[0].status == "published-by-other" and reports[0].lookup_status == "MISS"
    )
    assert waiter_transport.bytes_sent == 0, f"it uploaded {reports[0].bytes_uploaded} bytes"


def test_a_stale_upload_of_a_dead_run_does_not_block(tmp_path, project):
    p = _plan(project)
    _status, root = _shipper(tmp_path).lookup(p)
    dead = Path(root) / ".incoming" / f"{p.key}.dead.tar"
    dead.write_bytes(b"x")
    os.utime(dead, (time.time() - 300, time.time() - 300))
    assert _shipper(tmp_path).ensure(p).status == "published"
