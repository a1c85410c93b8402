"""One name per setting: field, environment variable and flag come from settings.py."""

from __future__ import annotations

import pytest

from dagster_hpc import EnvConfig, QueueConfig, SlurmResource, SSHConnectionResource, ssh_resource
from dagster_hpc.backends import slurm_resource
from dagster_hpc.cli import main
from dagster_hpc.envs import config as env_config
from dagster_hpc.errors import ConfigError
from dagster_hpc.settings import cli_flag, env_suffix

TABLES = [
    (slurm_resource.QUEUE_ENV_FIELDS, QueueConfig),
    (slurm_resource.RESOURCE_ENV_FIELDS, SlurmResource),
    (env_config.ENV_FIELDS, EnvConfig),
    (ssh_resource.ENV_FIELDS, SSHConnectionResource),
]
# the older spellings still read (documented in the readers)
ALIASES = {"SIGNAL", "CERT_PATH", "KNOWN_HOSTS", "SSH_CONFIG"}


@pytest.mark.parametrize(("table", "cls"), TABLES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_variable_is_its_fields_name_or_a_listed_alias(table, cls) -> None:
    for suffix, field in table.items():
        assert field in cls.model_fields, f"{suffix} names {field}, not a field of {cls.__name__}"
        assert suffix == env_suffix(field) or suffix in ALIASES, suffix
    derived = {f for s, f in table.items() if s == env_suffix(f)}
    assert derived == set(table.values())  # every field read has its derived name


def test_flag_is_derived_from_the_field() -> None:
    assert cli_flag("remote_base_dir") == "--remote-base-dir"
    assert env_suffix("remote_base_dir") == "REMOTE_BASE_DIR"


def test_an_alias_still_works_and_two_different_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DAGSTER_HPC_SSH_HOST", "DAGSTER_HPC_ENV_LOCK", "DAGSTER_HPC_ENV_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HPC_SLURM_SIGNAL", "USR1@60")
    assert SlurmResource.from_env().queue.signal_before_timeout == "USR1@60"
    monkeypatch.setenv("DAGSTER_HPC_SLURM_SIGNAL_BEFORE_TIMEOUT", "USR1@60")  # same: fine
    assert SlurmResource.from_env().queue.signal_before_timeout == "USR1@60"
    monkeypatch.setenv("DAGSTER_HPC_SLURM_SIGNAL_BEFORE_TIMEOUT", "USR2@30")
    with pytest.raises(ConfigError, match="set the same setting .*differently"):
        SlurmResource.from_env()


def test_runs_gc_takes_the_flag_of_the_setting_and_the_old_one(
    tmp_path, fake_slurm, capsys
) -> None:
    for flag in ("--remote-base-dir", "--remote-base"):
        rc = main(["runs", "gc", "--older-than", "7d", "--cluster-here", flag, str(tmp_path),
                   "--no-local", "--dry-run"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        assert str(tmp_path) in capsys.readouterr().out
