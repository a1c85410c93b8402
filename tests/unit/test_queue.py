"""QueueConfig: validation before submit, merging of per-asset overrides, #SBATCH rendering."""

from __future__ import annotations

import dagster as dg
import pydantic
import pytest

from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig, parse_mem_mb, parse_time_limit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30 * 60),
        ("5:30", 5 * 60 + 30),
        ("01:02:03", 3723),
        ("2-12", (2 * 24 + 12) * 3600),
        ("1-02:30", (26 * 60 + 30) * 60),
        ("1-00:00:05", 86405),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_every_slurm_time_format_is_accepted(text: str, seconds: int | None) -> None:
    assert parse_time_limit(text) == seconds
    assert QueueConfig(time_limit=text).to_sbatch_lines() == [f"#SBATCH --time={text}"]


@pytest.mark.parametrize("bad", ["1h", "1:2:3:4", "-5", "1-", "ten", "1 day", "1-2:3:4:5", ""])
def test_bad_time_format_is_rejected_with_examples(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"time_limit=.*HH:MM:SS.*e\.g\."):
        QueueConfig(time_limit=bad)


def test_mem_lots_is_rejected_with_a_valid_example() -> None:
    with pytest.raises(ConfigError) as err:
        QueueConfig(mem="lots")
    assert "'lots'" in str(err.value) and 'mem="4G"' in str(err.value)


def test_mem_units() -> None:
    assert parse_mem_mb("512M") == 512
    assert parse_mem_mb("4G") == 4096
    assert parse_mem_mb("1024") == 1024
    assert parse_mem_mb("2048K") == 2


def test_mem_and_mem_per_cpu_are_mutually_exclusive() -> None:
    with pytest.raises(ConfigError, match="mutually exclusive"):
        QueueConfig(mem="1G", mem_per_cpu="512M")


@pytest.mark.parametrize("field", ["nodes", "ntasks", "cpus_per_task"])
def test_negative_or_zero_counts_are_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}=-2 must be >= 1"):
        QueueConfig(**{field: -2})
    with pytest.raises(ConfigError, match=f"{field}=0"):
        QueueConfig(**{field: 0})


def test_wrong_type_is_rejected_by_pydantic() -> None:
    with pytest.raises(pydantic.ValidationError):
        QueueConfig(nodes="many")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "debug; rm -rf ~"),
        ("partition", "a b"),
        ("account", "$(whoami)"),
        ("qos", "normal\n#SBATCH --exclusive"),
        ("reservation", "`id`"),
        ("constraint", "intel' && echo"),
        ("constraint", "a\nb"),
    ],
)
def test_shell_metacharacters_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field):
        QueueConfig(**{field: value})


@pytest.mark.parametrize(
    "bad",
    ["--comment=a b", "--comment=$(id)", "--x\n#SBATCH --y", "no-dash", "--mail-user='x'", "--a;b"],
)
def test_unquotable_extra_directives_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="cannot be passed safely"):
        QueueConfig(extra_directives=[bad])


def test_reserved_directives_are_rejected() -> None:
    with pytest.raises(ConfigError, match="set by dagster-hpc"):
        QueueConfig(extra_directives=["--output=/tmp/x"])


def test_signal_spec() -> None:
    q = QueueConfig(signal_before_timeout="USR2@120", time_limit="10")
    assert q.signal == ("USR2", 120)
    assert "#SBATCH --signal=B:USR2@120" in q.to_sbatch_lines()
    assert QueueConfig(signal_before_timeout="SIGTERM").signal == ("TERM", 60)
    assert QueueConfig(signal_before_timeout="B:USR1@30").signal == ("USR1", 30)
    with pytest.raises(ConfigError, match="NAME@SECONDS"):
        QueueConfig(signal_before_timeout="FOO@1")
    with pytest.raises(ConfigError, match="lower the lead time"):
        QueueConfig(signal_before_timeout="USR2@600", time_limit="5")
    with pytest.raises(ConfigError, match="R: scope"):
        QueueConfig(signal_before_timeout="R:USR2@5")


def test_gres_needs_gpus() -> None:
    with pytest.raises(ConfigError, match="gpus_per_node"):
        QueueConfig(gres_type="a100")


def test_full_request_renders_in_a_stable_order() -> None:
    q = QueueConfig(
        partition="gpu",
        nodes=2,
        ntasks=8,
        cpus_per_task=4,
        mem_per_cpu="2G",
        gpus_per_node=4,
        gres_type="a100",
        time_limit="1-00:00:00",
        qos="high",
        account="proj-123",
        reservation="maint",
        constraint="intel&ib",
        exclusive=True,
        signal_before_timeout="USR2@300",
        extra_directives=["--mail-type=END", "--requeue"],
    )
    assert q.to_sbatch_lines() == [
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks=8",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem-per-cpu=2G",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --account=proj-123",
        "#SBATCH --reservation=maint",
        "#SBATCH --constraint='intel&ib'",
        "#SBATCH --gres=gpu:a100:4",
        "#SBATCH --exclusive",
        "#SBATCH --signal=B:USR2@300",
        "#SBATCH --mail-type=END",
        "#SBATCH --requeue",
    ]


def test_empty_request_renders_nothing() -> None:
    assert QueueConfig().to_sbatch_lines() == []


def test_merged_override_wins_field_by_field() -> None:
    base = QueueConfig(partition="debug", time_limit="10", mem="1G", extra_directives=["--requeue"])
    merged = base.merged(
        {"time_limit": "00:30:00", "cpus_per_task": 2, "extra_directives": ["--mail-type=END"]}
    )
    assert merged.partition == "debug"
    assert merged.time_limit == "00:30:00"
    assert merged.cpus_per_task == 2
    assert merged.mem == "1G"
    assert merged.extra_directives == ["--requeue", "--mail-type=END"]
    assert base.time_limit == "10"  # the default is never modified


def test_merged_memory_kind_switches_cleanly() -> None:
    base = QueueConfig(mem="4G")
    merged = base.merged(QueueConfig(mem_per_cpu="512M"))
    assert merged.mem is None and merged.mem_per_cpu == "512M"
    assert base.merged(None) == base


def test_merged_rejects_unknown_and_bad_override_fields() -> None:
    with pytest.raises(
        ConfigError, match="unknown keyword .partiton. \\(did you mean .partition.\\?\\)"
    ):
        QueueConfig().merged({"partiton": "debug"})
    with pytest.raises(ConfigError, match="lots"):
        QueueConfig().merged({"mem": "lots"})


def test_queue_config_is_immutable() -> None:
    q = QueueConfig(partition="debug")
    with pytest.raises(dg.DagsterInvalidInvocationError, match="does not support item assignment"):
        q.partition = "other"  # type: ignore[misc]


def test_from_env_error_names_the_environment_variable(monkeypatch) -> None:
    from dagster_hpc.backends.slurm_resource import SlurmResource

    monkeypatch.setenv("DAGSTER_HPC_SLURM_TIME_LIMIT", "1h")
    with pytest.raises(ConfigError, match="(?s)not a Slurm time.*DAGSTER_HPC_SLURM_TIME_LIMIT"):
        SlurmResource.from_env()
