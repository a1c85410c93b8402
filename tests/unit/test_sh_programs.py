"""Shell programs shipped as package data: each is shellchecked (scripts/lint); here the remote
commands built from them are golden, and every program the package ships is one we call."""

from __future__ import annotations

from importlib import resources

from dagster_hpc import sh
from dagster_hpc.envs.gc import list_script
from dagster_hpc.runs_gc import list_command
from tests.unit.golden import assert_golden


def test_runs_gc_list_command_is_golden() -> None:
    assert_golden(
        "sh_runs_gc_list.txt",
        list_command("\"$HOME\"/'.dagster-hpc/runs'", with_squeue=True) + "\n",
    )


def test_envs_gc_list_command_is_golden() -> None:
    assert_golden("sh_envs_gc_list.txt", list_script("~/.dagster-hpc") + "\n")


def test_programs_take_values_as_arguments_and_drop_comments() -> None:
    text = sh.program("runs_gc_list.sh")
    assert "#" not in text.splitlines()[0] and "base=$1" in text
    assert sh.command("runs_gc_list.sh", "'/x y'", "0").endswith(" runs_gc_list.sh '/x y' 0")


def test_every_shipped_program_is_used() -> None:
    shipped = {
        p.name for p in resources.files("dagster_hpc.sh").iterdir() if p.name.endswith(".sh")
    }
    assert shipped == {"runs_gc_list.sh", "envs_gc_list.sh", "final_record.sh"}


def test_final_record_command_is_golden() -> None:
    from dagster_hpc.backends.slurm_sacct import final_record_command

    assert_golden("sh_final_record.txt", final_record_command("123") + "\n")
