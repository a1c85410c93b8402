"""Strict input: every configuration class refuses a misspelled keyword, naming the closest valid
one; choice fields are Literal (the UI offers them) and refused with a suggestion; the from_env
readers refuse misspelled DAGSTER_HPC_* variables."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import (
    BashLauncher,
    ComputeResource,
    ConfigError,
    EnvConfig,
    ExecLauncher,
    PythonLauncher,
    QueueConfig,
    RayLauncher,
    SlurmResource,
    SrunLauncher,
    SSHConnectionResource,
    TorchrunLauncher,
)


@pytest.mark.parametrize(
    ("build", "bad", "suggestion"),
    [
        (lambda: QueueConfig(partiton="cpu"), "partiton", "partition"),
        (lambda: ComputeResource(mdoe="slurm"), "mdoe", "mode"),
        (lambda: SlurmResource(remote_base="/x"), "remote_base", "remote_base_dir"),
        (lambda: SSHConnectionResource(host="h", jump_host="j"), "jump_host", "jump_hosts"),
        (lambda: EnvConfig(lock_file="uv.lock"), "lock_file", "lock"),
        (lambda: SrunLauncher(ntask=2), "ntask", "ntasks"),
        (lambda: TorchrunLauncher(nproc=2), "nproc", "nproc_per_node"),
        (lambda: RayLauncher(join_timeout=5), "join_timeout", "join_timeout_s"),
        (lambda: PythonLauncher(pyhton="python3"), "pyhton", "python"),
        (lambda: BashLauncher(shel="sh"), "shel", "shell"),
    ],
)
def test_misspelled_keyword_is_refused_with_a_suggestion(build, bad, suggestion) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    text = str(info.value)
    assert f"unknown keyword {bad!r}" in text
    assert f"did you mean {suggestion!r}?" in text
    assert "valid keywords:" in text and suggestion in text.split("valid keywords:")[1]


def test_a_keyword_far_from_every_field_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown keyword 'colour'; valid keywords: \(none\)"):
        ExecLauncher(colour="red")
    with pytest.raises(ConfigError, match="unknown keyword 'zzz'; valid keywords: account, "):
        QueueConfig(zzz=1)


def test_queue_override_mapping_is_as_strict() -> None:
    with pytest.raises(
        ConfigError, match="queue override: unknown keyword 'partitoin'.*'partition'"
    ):
        QueueConfig().merged({"partitoin": "cpu"})


@pytest.mark.parametrize(
    ("build", "field", "suggestion"),
    [
        (lambda: ComputeResource(mode="slrum"), "mode", "slurm"),
        (lambda: ComputeResource(keep_run_dirs="fail"), "keep_run_dirs", "failed"),
        (lambda: SSHConnectionResource(host="h", transport="opensh"), "transport", "openssh"),
        (
            lambda: SSHConnectionResource(host="h", host_key_policy="accept_new"),
            "host_key_policy",
            "accept-new",
        ),
        (lambda: EnvConfig(lock="x", kind="wheelhous"), "kind", "wheelhouse"),
        (lambda: EnvConfig(lock="x", install_on="compte"), "install_on", "compute"),
        (lambda: SrunLauncher(local="mpi"), "local", "mpirun"),
    ],
)
def test_bad_choice_is_refused_with_a_suggestion(build, field, suggestion) -> None:
    with pytest.raises(ConfigError, match=f"unknown {field} .*did you mean {suggestion!r}"):
        build()


def test_choice_fields_are_enums_in_dagsters_config_schema() -> None:
    """So the launchpad and the resource page offer the choices instead of a free text box."""
    cases = [
        (ComputeResource, "mode", ["local", "slurm"]),
        (ComputeResource, "keep_run_dirs", ["always", "failed", "never"]),
        (SSHConnectionResource, "transport", ["asyncssh", "openssh"]),
        (SSHConnectionResource, "host_key_policy", ["strict", "accept-new"]),
        (EnvConfig, "kind", ["self-contained", "wheelhouse", "pack"]),
        (EnvConfig, "install_on", ["auto", "login", "compute"]),
    ]
    for cls, field, values in cases:
        config_type = cls.to_config_schema().as_field().config_type.fields[field].config_type
        assert config_type.kind.name == "ENUM", (cls, field)
        assert [v.config_value for v in config_type.enum_values] == values


def test_run_config_choices_still_work() -> None:
    @dg.asset
    def policy(compute: ComputeResource) -> str:
        return compute.keep_run_dirs

    result = dg.materialize(
        [policy],
        resources={"compute": ComputeResource()},
        run_config={"resources": {"compute": {"config": {"keep_run_dirs": "never"}}}},
    )
    assert result.output_for_node("policy") == "never"


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("DAGSTER_HPC_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_misspelled_slurm_variable_is_refused(clean_env) -> None:
    clean_env.setenv("DAGSTER_HPC_SLURM_PARTITON", "cpu")
    with pytest.raises(ConfigError) as info:
        SlurmResource.from_env()
    text = str(info.value)
    assert "DAGSTER_HPC_SLURM_PARTITON is not a setting" in text
    assert "did you mean 'DAGSTER_HPC_SLURM_PARTITION'?" in text
    assert "DAGSTER_HPC_SLURM_ACCOUNT" in text  # the valid set


def test_misspelled_ssh_variable_is_refused(clean_env) -> None:
    clean_env.setenv("DAGSTER_HPC_SSH_HOST", "login")
    clean_env.setenv("DAGSTER_HPC_SSH_JUMP_HOST", "gw")
    with pytest.raises(ConfigError, match="did you mean 'DAGSTER_HPC_SSH_JUMP_HOSTS'"):
        SSHConnectionResource.from_env()
    # and through SlurmResource.from_env, which reads the SSH settings too
    with pytest.raises(ConfigError, match="DAGSTER_HPC_SSH_JUMP_HOST is not a .*setting"):
        SlurmResource.from_env()


def test_misspelled_env_variable_is_refused(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("DAGSTER_HPC_ENV_LOKC", str(tmp_path / "uv.lock"))
    with pytest.raises(ConfigError, match="did you mean 'DAGSTER_HPC_ENV_LOCK'"):
        EnvConfig.from_env()


def test_misspelled_group_of_a_variable_is_refused(clean_env) -> None:
    clean_env.setenv("DAGSTER_HPC_SLRUM_ACCOUNT", "proj")
    with pytest.raises(ConfigError, match="did you mean 'DAGSTER_HPC_SLURM_ACCOUNT'"):
        SlurmResource.from_env()


def test_a_custom_prefix_is_as_strict(clean_env) -> None:
    clean_env.setenv("SITE_HOST", "login")
    clean_env.setenv("SITE_PROT", "2222")
    with pytest.raises(ConfigError, match="SITE_PROT is not a setting.*did you mean 'SITE_PORT'"):
        SSHConnectionResource.from_env("SITE")


def test_an_applications_own_variables_are_left_alone(clean_env) -> None:
    clean_env.setenv("DAGSTER_HPC_EXAMPLE_DATA", "/tmp/x")  # the example project's own
    clean_env.setenv("DAGSTER_HPC_MODE", "slurm")
    clean_env.setenv("DAGSTER_HPC_SLURM_PARTITION", "cpu")
    assert SlurmResource.from_env().queue.partition == "cpu"


def test_a_choice_given_as_envvar_is_read_and_checked(clean_env) -> None:
    clean_env.setenv("MY_MODE", "slurm")
    assert ComputeResource(mode=dg.EnvVar("MY_MODE")).mode == "slurm"
    clean_env.setenv("MY_MODE", "slrum")
    with pytest.raises(ConfigError, match="unknown mode 'slrum' \\(did you mean 'slurm'\\?\\)"):
        ComputeResource(mode=dg.EnvVar("MY_MODE"))
    clean_env.delenv("MY_MODE")
    with pytest.raises(ConfigError, match="MY_MODE is not set"):
        ComputeResource(mode=dg.EnvVar("MY_MODE"))
