"""The SSH page of the docs (docs/ssh.md), run verbatim against the test cluster; and `dagster-hpc doctor`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dagster_hpc.ssh_resource import DEFAULT_ENV_PREFIX, ENV_FIELDS

README = Path(__file__).resolve().parents[2] / "docs" / "ssh.md"
MARKER = "<!-- tested verbatim by tests/integration/test_ssh_readme.py -->"


def _ssh_section() -> str:
    return README.read_text()


def _env(cluster, prefix: str = DEFAULT_ENV_PREFIX, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((prefix + "_", "DAGSTER_HPC_SLURM_"))
    }
    env.update({
        f"{prefix}_HOST": cluster.host, f"{prefix}_PORT": str(cluster.port), f"{prefix}_USER": cluster.user,
        f"{prefix}_KEY_PATH": str(cluster.key_path), f"{prefix}_KNOWN_HOSTS": str(cluster.known_hosts),
    })  # fmt: skip
    env.update(extra)
    return env


def test_readme_from_env_example_runs_verbatim(cluster, tmp_path):
    section = _ssh_section()
    block = section[section.index(MARKER) :].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_example.py"
    script.write_text(block)
    r = subprocess.run(
        [sys.executable, str(script)],
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert re.match(r"slurm(-wlm)? 22\.05", r.stdout)


def test_every_variable_the_readme_exports_is_read_by_from_env():
    exported = re.findall(r"export DAGSTER_HPC_SSH_([A-Z_]+)=", _ssh_section())
    assert exported and set(exported) <= set(ENV_FIELDS)
    # every field's variable is in the generated configuration reference (the SSH page links it)
    sys.path.insert(0, str(README.parents[1] / "scripts"))
    import docs_reference

    reference = docs_reference.expand((README.parent / "configuration.md").read_text())
    documented = set(re.findall(rf"`{DEFAULT_ENV_PREFIX}_([A-Z_]+)`", reference))
    assert documented <= set(ENV_FIELDS)
    assert {ENV_FIELDS[s] for s in documented} == set(ENV_FIELDS.values())


def _doctor(cluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "dagster-hpc")
    return subprocess.run([exe, "doctor", *args], env=_env(cluster, **env), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_doctor_reports_a_healthy_cluster(cluster):
    r = _doctor(cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Slurm version:   22.05" in r.stdout
    assert "debug (default) | up |" in r.stdout
    assert (
        "sacct works" in r.stdout and "(writable)" in r.stdout and "ready to run jobs" in r.stdout
    )


def test_doctor_names_an_unwritable_base_dir(cluster):
    r = _doctor(cluster, "--remote-base", "/root/not-for-hpcuser")
    assert r.returncode == 1
    assert "PROBLEM: The remote base directory /root/not-for-hpcuser is not writable" in r.stdout


def test_doctor_checks_the_configured_partition_and_base(cluster):
    r = _doctor(
        cluster,
        DAGSTER_HPC_SLURM_PARTITION="no-such-partition",
        DAGSTER_HPC_SLURM_REMOTE_BASE_DIR="~/.dagster-hpc-doctor",
    )
    assert r.returncode == 1
    assert "PROBLEM: Partition 'no-such-partition'" in r.stdout and "use one of debug" in r.stdout
    assert "/.dagster-hpc-doctor (writable)" in r.stdout


def test_doctor_explains_a_refused_login(cluster):
    secret = "Xq-not-the-password-42"
    r = _doctor(
        cluster,
        DAGSTER_HPC_SSH_KEY_PATH="",
        DAGSTER_HPC_SSH_USE_AGENT="0",
        DAGSTER_HPC_SSH_PASSWORD=secret,
    )
    assert r.returncode == 2
    assert "PROBLEM: cannot log in" in r.stderr and "refused our credentials" in r.stderr
    assert secret not in r.stderr + r.stdout
