"""SSHConnectionResource: from_env, validation before connecting, secrets kept out of config."""

from __future__ import annotations

import dagster as dg
import pytest

from dagster_hpc.errors import ConfigError
from dagster_hpc.ssh_resource import SSHConnectionResource
from dagster_hpc.transport.holder_client import HolderTransport
from dagster_hpc.transport.openssh import OpenSSHTransport
from dagster_hpc.transport.ssh import SSHTransport


@pytest.fixture
def env(monkeypatch):
    for k in (
        "HOST",
        "PORT",
        "USER",
        "PASSWORD",
        "TOTP_SECRET",
        "JUMP_HOSTS",
        "TRANSPORT",
        "REQUIRE_LOGIN",
        "USE_AGENT",
    ):
        monkeypatch.delenv(f"SITE_{k}", raising=False)
    return monkeypatch


def test_from_env_reads_every_setting_and_keeps_secrets_as_env_references(env):
    env.setenv("SITE_HOST", "login.example")
    env.setenv("SITE_PORT", "2200")
    env.setenv("SITE_USER", "alice")
    env.setenv("SITE_PASSWORD", "s3cret")
    env.setenv("SITE_TOTP_SECRET", "JBSWY3DPEHPK3PXP")
    env.setenv("SITE_JUMP_HOSTS", "alice@gw1:22, gw2")
    env.setenv("SITE_USE_AGENT", "no")
    r = SSHConnectionResource.from_env("SITE")
    assert (r.host, r.port, r.user, r.jump_hosts, r.use_agent) == (
        "login.example",
        2200,
        "alice",
        ["alice@gw1:22", "gw2"],
        False,
    )
    # what Dagster shows as this resource's config: the variable names, never the values
    assert isinstance(r.password, dg.EnvVar) and r.password.env_var_name == "SITE_PASSWORD"
    assert "s3cret" not in repr(r) and "JBSWY3DPEHPK3PXP" not in repr(r)
    target = r.to_target()  # resolved only when the connection is made
    assert target.password == "s3cret" and target.totp_secret == "JBSWY3DPEHPK3PXP"
    assert [str(h) for h in target.jump_hosts] == ["alice@gw1:22", "gw2"]


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [("SITE_PORT", "22x", "not a port"), ("SITE_REQUIRE_LOGIN", "maybe", "true/false")],
)
def test_from_env_rejects_bad_values(env, var, value, match):
    env.setenv("SITE_HOST", "h")
    env.setenv(var, value)
    with pytest.raises(ConfigError, match=match):
        SSHConnectionResource.from_env("SITE")


def test_from_env_without_host_says_which_variable(env):
    with pytest.raises(ConfigError, match="SITE_HOST is not set"):
        SSHConnectionResource.from_env("SITE")


def test_bad_config_fails_before_connecting():
    with pytest.raises(ConfigError, match="unknown transport .telnet."):
        SSHConnectionResource(host="h", transport="telnet").get_transport()
    with pytest.raises(ConfigError, match="host_key_policy"):
        SSHConnectionResource(host="h", host_key_policy="yolo").get_transport()
    with pytest.raises(ConfigError, match="bad jump host"):
        SSHConnectionResource(host="h", jump_hosts=["a@b@c"]).get_transport()


def test_get_transport_picks_the_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HPC_HOLDER_DIR", str(tmp_path / "holders"))
    holder = SSHConnectionResource(host="h").get_transport()  # the default: one login for all
    assert isinstance(holder, HolderTransport)
    assert holder.socket_path.parent == tmp_path / "holders"
    assert (tmp_path / "holders").stat().st_mode & 0o777 == 0o700
    private = SSHConnectionResource(host="h", connection_holder=False).get_transport()
    assert isinstance(private, SSHTransport)
    t = SSHConnectionResource(
        host="h", transport="openssh", control_dir=str(tmp_path), require_login=True
    ).get_transport()
    assert (
        isinstance(t, OpenSSHTransport)
        and t.require_login
        and t.control_path.startswith(str(tmp_path))
    )


def test_resource_works_inside_definitions():
    @dg.asset
    def probe(ssh: SSHConnectionResource) -> str:
        return ssh.to_target().label

    result = dg.materialize(
        [probe],
        resources={"ssh": SSHConnectionResource(host="login.example", user="bob", port=2222)},
    )
    assert result.output_for_node("probe") == "bob@login.example:2222"


def test_env_var_secrets_resolve_inside_a_run(env):
    env.setenv("SITE_PASSWORD", "from-env")

    @dg.asset
    def probe(ssh: SSHConnectionResource) -> bool:
        return ssh.to_target().password == "from-env"

    result = dg.materialize(
        [probe],
        resources={"ssh": SSHConnectionResource(host="h", password=dg.EnvVar("SITE_PASSWORD"))},
    )
    assert result.output_for_node("probe") is True


def test_plain_string_secrets_stay_out_of_repr_and_str():
    r = SSHConnectionResource(host="h", password="hunter2", totp_secret="JBSWY3DPEHPK3PXP")
    assert "hunter2" not in repr(r) + str(r) and "JBSWY3DPEHPK3PXP" not in repr(r) + str(r)
    assert r.to_target().password == "hunter2"
