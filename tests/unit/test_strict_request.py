"""Regression tests for input that used to pass silently: reserved sbatch options in other
spellings, out-of-range time fields, NUL bytes. Each failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, ConfigError, QueueConfig, SrunLauncher
from dagster_hpc.slurm_options import reserved_spelled

PAYLOADS = Path(__file__).parent / "payloads"


@pytest.mark.parametrize(
    ("directive", "reserved"),
    [
        ("-Jrenamed", "-J"),  # attached short value
        ("-J=renamed", "-J"),
        ("--job=renamed", "--job-name"),  # getopt_long abbreviation sbatch accepts
        ("--job-n=renamed", "--job-name"),
        ("--out=/tmp/elsewhere", "--output"),
        ("--outp=/tmp/elsewhere", "--output"),
        ("-ofile", "-o"),
        ("--err=/tmp/e", "--error"),
        ("--chd=/tmp", "--chdir"),
        ("-vJrenamed", "-J"),  # bundled flag, then the reserved one
        ("--parsable", "--parsable"),
    ],
)
def test_reserved_sbatch_options_are_refused_in_every_spelling(directive, reserved) -> None:
    with pytest.raises(ConfigError, match=f"sets {reserved}, which is set by dagster-hpc"):
        QueueConfig(extra_directives=[directive])


@pytest.mark.parametrize(
    "directive",
    ["--mail-type=END", "--export=ALL", "--exclusive", "-pdebug", "-N2", "--partition=x"],
)
def test_other_options_still_pass(directive) -> None:
    assert QueueConfig(extra_directives=[directive]).to_sbatch_lines()


def test_a_short_value_ends_the_letters() -> None:
    # -p takes a value: "debug" is the partition name, not -d -e -b -u -g
    assert reserved_spelled("-pdebug", {"-e", "-D"}) is None
    assert reserved_spelled("-e", {"-e"}) == "-e"


def test_srun_options_abbreviating_a_reserved_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="set by the launcher itself"):
        SrunLauncher(srun_options=("--ntask=4",))
    with pytest.raises(ConfigError, match="set by the launcher itself"):
        SrunLauncher(srun_options=("--outp=/tmp/x",))


@pytest.mark.parametrize(
    ("value", "field", "normalised"),
    [
        ("25:61:00", "minutes=61", "1-02:01:00"),
        ("10:00:60", "seconds=60", "10:01:00"),
        ("90:75", "seconds=75", "01:31:15"),
        ("1-24", "hours=24", "2-00:00:00"),
        ("2-12:60", "minutes=60", "2-13:00:00"),
    ],
)
def test_time_fields_out_of_range_are_refused(value, field, normalised) -> None:
    with pytest.raises(ConfigError, match=f"{field} is out of range.*'{normalised}'"):
        QueueConfig(time_limit=value)


@pytest.mark.parametrize("value", ["30", "90:00", "100:00:00", "1-23:59:59", "UNLIMITED", "61"])
def test_valid_time_limits_still_pass(value) -> None:
    QueueConfig(time_limit=value)


def _asset(**run_kwargs):
    @dg.asset(name="nul")
    def nul(context, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "report.py", **run_kwargs).get_results()

    return nul


@pytest.mark.parametrize(
    ("run_kwargs", "resource_kwargs", "what"),
    [
        ({"extra_env": {"TOKEN": "abc\0def"}}, {}, r"extra_env\['TOKEN'\]"),
        ({"args": ["--name", "a\0b"]}, {}, "args"),
        ({}, {"extra_env": {"TOKEN": "abc\0def"}}, r"ComputeResource.extra_env\['TOKEN'\]"),
    ],
)
def test_nul_bytes_are_refused_before_anything_runs(
    tmp_path: Path, run_kwargs, resource_kwargs, what
) -> None:
    compute = ComputeResource(base_dir=str(tmp_path), **resource_kwargs)
    with pytest.raises(ConfigError, match=f"{what} value .* contains a NUL byte"):
        dg.materialize([_asset(**run_kwargs)], resources={"compute": compute})
    assert list(tmp_path.iterdir()) == []  # nothing was staged


def test_nul_in_a_command_payload_is_refused() -> None:
    compute = ComputeResource()
    with pytest.raises(ConfigError, match="payload argv value .* contains a NUL byte"):
        compute.render_job_script(["echo", "a\0b"])
