"""Target platform: the compute-node probe's parsing, wheel tags, and the local cache."""

from __future__ import annotations

import shlex

import pytest

from dagster_hpc.envs.platform import (
    TargetPlatform,
    compute_node_platform,
    parse_probe_output,
    probe_command,
)
from dagster_hpc.errors import ConfigError, TransportError
from dagster_hpc.transport.base import CommandResult

PROBE_OUT = (
    "noise from a login banner\n"
    "DAGSTER_HPC_PROBE_os=Linux\nDAGSTER_HPC_PROBE_arch=aarch64\nDAGSTER_HPC_PROBE_glibc=2.28\n"
    "DAGSTER_HPC_PROBE_python=3.9\nDAGSTER_HPC_PROBE_python_path=/usr/bin/python3\n"
)


def test_probe_output_parsed():
    p = parse_probe_output(PROBE_OUT)
    assert p == TargetPlatform(
        os="linux", arch="aarch64", glibc="2.28", python="3.9", node_python="/usr/bin/python3"
    )


def test_python_override_drops_the_nodes_own_interpreter():
    p = parse_probe_output(PROBE_OUT, python="3.11")
    assert (p.python, p.node_python) == ("3.11", "")
    assert p.with_python("3.9").node_python == ""  # cannot come back once dropped
    node = parse_probe_output(PROBE_OUT)
    assert node.with_python("3.9") == node


def test_probe_without_platform_lines_is_an_error_with_the_output():
    with pytest.raises(TransportError, match="(?s)printed no platform lines.*srun: error"):
        parse_probe_output("srun: error: invalid partition")


def test_wheel_tags_cover_older_manylinux_only():
    tags = TargetPlatform(arch="x86_64", glibc="2.28").wheel_platform_tags()
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert (
        TargetPlatform(arch="aarch64", glibc="2.28").uv_python_platform()
        == "aarch64-manylinux_2_28"
    )


def test_probe_command_is_quoted_and_names_the_partition():
    argv = shlex.split(probe_command("gpu nodes"))
    assert argv[:1] == ["srun"] and "--partition=gpu nodes" in argv
    assert argv[-3:-1] == ["sh", "-c"]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"os": "darwin"}, "not supported"),
        ({"glibc": "2"}, "MAJOR.MINOR"),
        ({"python": "3"}, "3.MINOR"),
        ({"arch": "x86 64; rm"}, "machine name"),
    ],
)
def test_bad_platform_rejected(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TargetPlatform(**kw)


class _ProbeTransport:
    def __init__(self, result: CommandResult):
        self.result, self.commands = result, []

    def run(self, command, *, timeout=None, stdin=None):
        self.commands.append(command)
        return self.result


def test_probe_runs_once_then_comes_from_the_cache(tmp_path):
    t = _ProbeTransport(CommandResult(0, PROBE_OUT, ""))
    first = compute_node_platform(t, "u@h:22", partition="debug", cache_dir=tmp_path)
    second = compute_node_platform(t, "u@h:22", partition="debug", cache_dir=tmp_path)
    assert first == second and len(t.commands) == 1 and "srun" in t.commands[0]
    compute_node_platform(t, "u@h:22", partition="other", cache_dir=tmp_path)  # per partition
    compute_node_platform(t, "u@h:22", partition="debug", cache_dir=tmp_path, refresh=True)
    assert len(t.commands) == 3
    assert (
        compute_node_platform(
            t, "u@h:22", partition="debug", cache_dir=tmp_path, python="3.11"
        ).python
        == "3.11"
    )


def test_failed_probe_says_what_to_do(tmp_path):
    t = _ProbeTransport(
        CommandResult(
            1, "", "srun: error: Unable to allocate resources: Invalid partition name specified"
        )
    )
    with pytest.raises(
        TransportError, match="(?s)probing the compute nodes failed.*Invalid partition.*hint"
    ):
        compute_node_platform(t, "u@h:22", partition="nope", cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.json"))


def test_site_options_reach_the_probe_and_a_constraint_gets_its_own_cache_entry(tmp_path):
    from dagster_hpc.envs.resolve import queue_srun_options
    from dagster_hpc.queue import QueueConfig

    opts = queue_srun_options(
        QueueConfig(partition="gpu", account="proj-1", qos="short", constraint="a100")
    )
    assert opts == (
        "--account=proj-1",
        "--qos=short",
        "--constraint=a100",
    )  # partition passed apart
    argv = shlex.split(probe_command("gpu", opts))
    assert {"--partition=gpu", "--account=proj-1", "--qos=short", "--constraint=a100"} <= set(argv)
    t = _ProbeTransport(CommandResult(0, PROBE_OUT, ""))
    compute_node_platform(t, "c", partition="gpu", cache_dir=tmp_path, options=opts)
    compute_node_platform(t, "c", partition="gpu", cache_dir=tmp_path, options=("--account=other",))
    assert len(t.commands) == 2  # another constraint (here: none) is another set of nodes
    compute_node_platform(
        t, "c", partition="gpu", cache_dir=tmp_path, options=("--account=x", "--constraint=a100")
    )
    assert len(t.commands) == 2  # same partition + constraint: cached, whatever the account
