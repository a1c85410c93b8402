"""`dagster-hpc env build` without a cluster (explicit target platform), and its errors."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from dagster_hpc.cli import main
from tests.unit.test_envs_ship import _SELF_EXTRACTOR


def test_env_build_with_an_explicit_platform_needs_no_connection(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HPC_SSH_HOST", raising=False)
    req = tmp_path / "requirements.txt"
    req.write_text("polars==2.1.0\n")
    argv = [
        "env",
        "build",
        "--lock",
        str(req),
        "--kind",
        "pack",
        "--pack-command",
        f"sh -c {shlex.quote(_SELF_EXTRACTOR)}",
        "--arch",
        "x86_64",
        "--glibc",
        "2.28",
        "--python",
        "3.11",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(None, 1) for line in out.splitlines())
    bundle = Path(fields["bundle"].split(" (")[0])
    assert (
        bundle.is_file() and bundle.name == f"{fields['key']}.tar"
    )  # pack outputs are not recompressed
    assert fields["platform"] == "x86_64-manylinux_2_28" and fields["kind"] == "pack"
    assert main(argv) == 0 and "from the local cache" in capsys.readouterr().out


def test_env_build_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HPC_SSH_HOST", raising=False)
    assert (
        main(
            [
                "env",
                "build",
                "--lock",
                str(tmp_path / "nope.lock"),
                "--arch",
                "x86_64",
                "--glibc",
                "2.28",
            ]
        )
        == 1
    )
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["env", "build", "--lock", "x", "--kind", "conda"])
    # no platform given and no login node to probe: says how to fix it
    req = tmp_path / "requirements.txt"
    req.write_text("polars==2.1.0\n")
    capsys.readouterr()
    assert main(["env", "build", "--lock", str(req)]) == 1
    assert (
        "no login node given: pass HOST or export DAGSTER_HPC_SSH_HOST" in capsys.readouterr().err
    )


def test_env_gc_local_keeps_the_newest_bundles(tmp_path, capsys):
    import os

    bundles = tmp_path / "bundles"
    bundles.mkdir()
    names = [f"{c * 24}.tar" for c in "abc"]
    for i, name in enumerate(names):
        (bundles / name).write_bytes(b"x")
        os.utime(bundles / name, (1000 + i, 1000 + i))
    (bundles / "not-a-bundle.tar").write_bytes(b"x")
    dead, live = bundles / f"{'d' * 24}.tar.part-x", bundles / f"{'e' * 24}.tar.part-y"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    os.utime(dead, (1000, 1000))
    assert main(["env", "gc", "--local", "--keep", "1", "--cache-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in bundles.iterdir()) == sorted(
        [names[2], "not-a-bundle.tar", live.name]
    )
    assert capsys.readouterr().out.count("removed ") == 3
