"""Requests no node of the partition can satisfy are refused before sbatch (pure checks)."""

from __future__ import annotations

import pytest

from dagster_hpc.backends.slurm_script import check_partition_limits, partition_limits
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig

# two node groups in "cpu" (the largest node counts), a 2-day "long" and an unlimited "debug"
SINFO = "cpu;1:00:00;4000;4,cpu;1:00:00;64000+;32,long;2-00:00:00;8000;8,debug;infinite;1000;2,"


def test_partition_limits_parse_groups_and_keep_the_largest_node() -> None:
    limits = partition_limits(SINFO)
    assert limits["cpu"] == (3600, 64000.0, 32)
    assert limits["long"] == (2 * 86400, 8000.0, 8)
    assert limits["debug"] == (None, 1000.0, 2)


@pytest.mark.parametrize(
    ("queue", "partition", "match"),
    [
        (
            {"time_limit": "02:00:00"},
            "cpu",
            r"time_limit='02:00:00' exceeds the partition 'cpu'.*MaxTime 60 min",
        ),
        ({"mem": "100G"}, "cpu", r"asks for 102400 MB per node.*has 64000 MB"),
        (
            {"mem_per_cpu": "2G", "cpus_per_task": 8},
            "long",
            r"asks for 16384 MB per node.*has 8000 MB",
        ),
        ({"cpus_per_task": 4}, "debug", r"cpus_per_task=4 but the largest node.*has 2 CPUs"),
    ],
)
def test_impossible_requests_are_refused_with_the_limit(queue, partition, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_partition_limits(SINFO, QueueConfig(**queue), cluster="c", partition=partition)


@pytest.mark.parametrize(
    ("queue", "partition"),
    [
        ({"time_limit": "01:00:00", "mem": "60G", "cpus_per_task": 32}, "cpu"),
        ({"time_limit": "UNLIMITED", "mem": "900M"}, "debug"),
        ({"time_limit": "7-00:00:00"}, "unknown-to-sinfo"),  # no limits known: nothing to refuse
        ({}, "long"),
    ],
)
def test_satisfiable_requests_pass(queue, partition) -> None:
    check_partition_limits(SINFO, QueueConfig(**queue), cluster="c", partition=partition)


def test_no_sinfo_answer_checks_nothing() -> None:
    check_partition_limits("", QueueConfig(mem="1T"), cluster="c", partition="cpu")
