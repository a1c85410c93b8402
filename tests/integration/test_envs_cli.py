"""`dagster-hpc env push|list|gc` against the real cluster as hpcuser: gc keeps the newest and
the environment a running job uses."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from dagster_hpc.cli import main
from dagster_hpc.envs.ship import forget_verified
from tests.integration import envs_support as S
from tests.integration.slurm_support import payload_python

MTIME_RESOLUTION_S = 1.1


@pytest.fixture
def cli_env(cluster, monkeypatch, tmp_path):
    for k, v in {
        "HOST": cluster.host,
        "PORT": str(cluster.port),
        "USER": cluster.user,
        "KEY_PATH": str(cluster.key_path),
        "KNOWN_HOSTS": str(cluster.known_hosts),
        "USE_AGENT": "0",
    }.items():
        monkeypatch.setenv(f"DAGSTER_HPC_SSH_{k}", v)
    base = S.fresh_remote_base(cluster)
    forget_verified()
    yield base, tmp_path
    forget_verified()
    S.transport(cluster).run(f"rm -rf {shlex.quote(base)}")


def _push_tiny(cluster, base: str, tmp_path, tag: str, capsys) -> str:
    """Publish a tiny 'pack' env (a wrapper around the cluster's payload Python); returns its key."""
    req = tmp_path / "requirements.txt"
    req.write_text("dagster-pipes\n")
    extractor = (
        f"printf '%s\\n' 'mkdir -p env/bin' "
        f'\'printf "#!/bin/sh\\nexec {payload_python(cluster)} \\"\\$@\\"\\n" > env/bin/python\' '
        f"'chmod 755 env/bin/python' > {{output}} # {tag}"
    )
    rc = main(
        [
            "env",
            "push",
            "--lock",
            str(req),
            "--kind",
            "pack",
            "--pack-command",
            f"sh -c {shlex.quote(extractor)}",
            "--remote-base",
            base,
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    return out.split()[1]  # "key <KEY> (pack)"


def test_push_list_gc_keeps_newest_and_in_use(cluster, cli_env, capsys):
    base, tmp_path = cli_env
    keys = []
    for i in range(3):
        keys.append(_push_tiny(cluster, base, tmp_path, f"v{i}", capsys))
        time.sleep(MTIME_RESOLUTION_S)  # "last used" is an mtime in whole seconds
    assert len(set(keys)) == 3

    assert main(["env", "list", "--remote-base", base, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in listed["entries"]] == keys[::-1]  # newest first

    # a running job of ours uses the oldest env
    t = S.transport(cluster)
    jobdir = f"{base}/run-inuse"
    t.check(
        f"mkdir -p {jobdir} && printf '#!/bin/bash\\n{base}/envs/{keys[0]}/env/bin/python -c 1\\nsleep 120\\n' > {jobdir}/job.sh"
    )
    job_id = (
        t.check(f"cd {jobdir} && sbatch --parsable --job-name=dhpc-envs-gc -t 3 job.sh")
        .strip()
        .split(";")[0]
    )
    try:
        assert main(["env", "gc", "--remote-base", base, "--keep", "1", "--dry-run"]) == 0
        dry = capsys.readouterr().out
        assert f"would remove {keys[1]}" in dry and keys[0] not in dry.split("kept")[0]
        assert main(["env", "gc", "--remote-base", base, "--keep", "1"]) == 0
        out = capsys.readouterr().out
        assert f"removed {keys[1]}" in out and f"removed {keys[0]}" not in out
    finally:
        t.run(f"scancel {shlex.quote(job_id)}")
    remaining = t.check(f"ls {base}/envs").split()
    assert sorted(remaining) == sorted([keys[2], keys[0]])


def test_cli_errors_are_plain(cluster, cli_env, capsys):
    base, _tmp = cli_env
    assert main(["env", "push", "--lock", "/nonexistent/uv.lock", "--remote-base", base]) == 1
    assert "does not exist" in capsys.readouterr().err
