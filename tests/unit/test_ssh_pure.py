"""Pure parts of the SSH transports: TOTP, prompt answering, target validation, the remote shell
commands (run here through a real local sh), ssh argv, askpass, doctor parsing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dagster_hpc.cli.doctor import doctor_script, parse_report
from dagster_hpc.errors import ConfigError
from dagster_hpc.transport import _shell
from dagster_hpc.transport.askpass import PASSWORD_ENV, TOTP_SECRET_ENV, answer
from dagster_hpc.transport.auth import JumpHost, SSHTarget, parse_jump_hosts
from dagster_hpc.transport.openssh import control_key, hop_config, ssh_base_argv
from dagster_hpc.transport.totp import totp_code

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # b"12345678901234567890" (RFC 6238 appendix B)


@pytest.mark.parametrize(
    ("t", "code"), [(59, "94287082"), (1111111109, "07081804"), (2000000000, "69279037")]
)
def test_totp_matches_rfc6238_vectors(t, code):
    assert totp_code(RFC_SECRET, at=t, digits=8) == code


def test_totp_tolerates_lowercase_spaces_and_missing_padding():
    assert totp_code("jbsw y3dp ehpk 3pxp", at=1000) == totp_code("JBSWY3DPEHPK3PXP", at=1000)


def test_bad_totp_secret_is_rejected_before_connecting():
    with pytest.raises(ConfigError, match="not valid base32"):
        SSHTarget("h", totp_secret="not-base32-!!")


def test_password_only_answers_password_prompts():
    t = SSHTarget("h", password="pw")
    assert t.answer_prompts([("Password: ", False)]) == ["pw"]
    # the peer answers OTP prompts with the password; we decline instead
    assert t.answer_prompts([("Verification code: ", False)]) is None


def test_otp_prompts_get_codes_from_secret_or_callback():
    t = SSHTarget("h", password="pw", totp_secret=SECRET)
    answers = t.answer_prompts([("Password: ", False), ("(user@h) Verification code: ", False)])
    assert (
        answers is not None and answers[0] == "pw" and answers[1].isdigit() and len(answers[1]) == 6
    )
    seen = []
    cb = SSHTarget("h", otp_callback=lambda p: seen.append(p) or " 123456 ")
    assert cb.answer_prompts([("OTP: ", True)]) == ["123456"] and seen == ["OTP: "]


def test_secrets_never_in_repr():
    t = SSHTarget("h", password="hunter2", totp_secret=SECRET)
    assert "hunter2" not in repr(t) and SECRET not in repr(t)


@pytest.mark.parametrize(
    "kw",
    [dict(host=""), dict(host="-oProxyCommand=x"), dict(host="a b"), dict(host="h", port=0), dict(host="h", port=70000),
     dict(host="h", user="-x"), dict(host="h", host_key_policy="no"), dict(host="h", key_paths=("/nonexistent/key",)),
     dict(host="h", known_hosts="/nonexistent/known_hosts"), dict(host="h", connect_timeout=0)],
)  # fmt: skip
def test_bad_targets_are_rejected(kw):
    with pytest.raises(ConfigError):
        SSHTarget(**kw)


def test_jump_host_parsing():
    assert parse_jump_hosts("a, bob@b:2223") == (JumpHost("a"), JumpHost("b", 2223, "bob"))
    assert str(JumpHost("b", 2223, "bob")) == "bob@b:2223"
    with pytest.raises(ConfigError, match="bad jump host"):
        parse_jump_hosts("a@b@c")


def _sh(command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, check=False)


def test_read_commands_through_a_real_shell(tmp_path):
    f = tmp_path / "it's a file"  # quoting: spaces and a quote in the name
    f.write_bytes(b"0123456789\x00\xff")
    assert _sh(_shell.read_command(str(f), 3, 4)).stdout == b"3456"
    assert _sh(_shell.read_command(str(f), 12, 100)).stdout == b""
    assert _sh(_shell.read_command(str(tmp_path / "missing"), 0, 10)).stdout == b""
    cmd = _shell.read_many_command([(str(f), 10), (str(tmp_path / "missing"), 0), (str(f), 0)], 5)
    out = _sh(cmd).stdout
    assert _shell.parse_read_many(out, 3) == [b"\x00\xff", b"", b"01234"]
    with pytest.raises(ConfigError):
        _shell.read_command("x", -1, 1)


def test_tar_and_untar_round_trip_with_private_mode(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x.sh").write_text("echo hi\n")
    (src / "d" / "x.sh").chmod(0o750)
    dst = tmp_path / "dst; touch pwned"
    r = _sh(_shell.untar_command(str(dst), 0o700), _shell.tar_directory(src))
    assert r.returncode == 0, r.stderr
    assert (dst / "d" / "x.sh").read_text() == "echo hi\n"
    assert oct(dst.stat().st_mode & 0o777) == "0o700"
    assert not (tmp_path / "pwned").exists()


def test_publish_is_atomic_rename(tmp_path):
    tmp = _shell.temp_name(str(tmp_path / "f"))
    Path(tmp).write_text("x")
    assert _sh(_shell.publish_command(tmp, str(tmp_path / "f"), 0o640)).returncode == 0
    assert (tmp_path / "f").read_text() == "x" and not Path(tmp).exists()


def test_ssh_argv_is_strict_and_routes_jumps_through_the_hop_config(tmp_path):
    key = tmp_path / "k"
    key.write_text("x")
    t = SSHTarget(
        "login",
        port=2222,
        user="u",
        key_paths=(str(key),),
        jump_hosts=parse_jump_hosts("j1:2223,j2"),
    )
    argv = ssh_base_argv(t, "/s/cm", "/s/cfg")
    assert argv[:3] == ["ssh", "-F", "/s/cfg"]
    assert "StrictHostKeyChecking=yes" in argv and "IdentitiesOnly=yes" in argv
    k = control_key(t)
    assert argv[-2:] == ["-J", f"dhpc-{k}-hop1"]
    cfg = hop_config(t, k, "/home/u/.ssh/config")
    assert f"Host dhpc-{k}-hop1\n  HostName j2\n" in cfg and f"ProxyJump dhpc-{k}-hop0" in cfg
    assert "Port 2223" in cfg and cfg.rstrip().endswith("Include /home/u/.ssh/config")
    accept = SSHTarget("login", host_key_policy="accept-new")
    assert "StrictHostKeyChecking=accept-new" in ssh_base_argv(accept, "/s/cm", None)


def test_askpass_answers_only_what_it_should():
    env = {PASSWORD_ENV: "pw", TOTP_SECRET_ENV: SECRET}
    assert answer("hpcuser@h's password: ", env) == "pw"
    code = answer("(hpcuser@127.0.0.1) Verification code: ", env)
    assert code is not None and code.isdigit() and len(code) == 6
    assert answer("Verification code: ", {PASSWORD_ENV: "pw"}) is None  # never the password
    assert (
        answer("Are you sure you want to continue connecting (yes/no/[fingerprint])? ", env) is None
    )
    assert answer("Enter passphrase for key '/k': ", env) is None


DOCTOR_OK = """@@dagster-hpc-doctor version
slurm-wlm 22.05.8
@@dagster-hpc-doctor rc 0
@@dagster-hpc-doctor partitions
debug*|up|infinite|30:00|4|1-infinite|4|4000|(null)
gpu|down|2-00:00:00|1:00:00|2|1-2|64|512000|gpu:a100:4
@@dagster-hpc-doctor rc 0
@@dagster-hpc-doctor sacct
12|COMPLETED
@@dagster-hpc-doctor rc 0
@@dagster-hpc-doctor base
/home/u/.dagster-hpc
@@dagster-hpc-doctor rc 0
@@dagster-hpc-doctor flock
/usr/bin/flock
@@dagster-hpc-doctor rc 0
"""


def test_doctor_parses_a_healthy_cluster():
    r = parse_report("u@h", DOCTOR_OK)
    assert r.slurm_version == "22.05.8" and r.sacct_ok and r.base_writable and not r.problems
    assert [(p.name, p.default, p.time_limit, p.default_time, p.max_nodes_per_job, p.gres) for p in r.partitions] == [
        ("debug", True, "infinite", "30:00", "1-infinite", "(null)"), ("gpu", False, "2-00:00:00", "1:00:00", "1-2", "gpu:a100:4"),
    ]  # fmt: skip
    assert any("gpu is down" in w for w in r.warnings)


def test_doctor_explains_problems_in_plain_words():
    out = (
        DOCTOR_OK.replace(
            "12|COMPLETED\n@@dagster-hpc-doctor rc 0",
            "Slurm accounting storage is disabled\n@@dagster-hpc-doctor rc 1",
        )
        .replace(
            "/home/u/.dagster-hpc\n@@dagster-hpc-doctor rc 0",
            "/scratch/x\nmkdir: Permission denied\n@@dagster-hpc-doctor rc 1",
        )
        .replace(
            "slurm-wlm 22.05.8\n@@dagster-hpc-doctor rc 0",
            "sh: sinfo: not found\n@@dagster-hpc-doctor rc 127",
        )
    )
    out = out.replace("/usr/bin/flock\n@@dagster-hpc-doctor rc 0", "@@dagster-hpc-doctor rc 1")
    r = parse_report("u@h", out)
    assert r.slurm_version is None and not r.sacct_ok and not r.base_writable and not r.flock_ok
    text = " ".join(r.problems + r.warnings)
    assert "sinfo --version" in text and "module" in text
    assert "accounting storage is disabled" in text and "unavailable" in text
    assert "/scratch/x is not writable" in text and "Permission denied" in text
    assert "flock is not on the login node's PATH" in text and "util-linux" in text
    assert parse_report("u@h", DOCTOR_OK).flock_ok


def test_doctor_script_quotes_the_base_dir():
    assert "b='/x; rm -rf ~'" in doctor_script("/x; rm -rf ~")
    assert 'b="$HOME"/.dagster-hpc/runs' in doctor_script(None)  # SlurmResource's default
    assert """b="$HOME"/'my dir'""" in doctor_script("~/my dir")


def test_doctor_flags_a_configured_partition_that_does_not_exist():
    r = parse_report("u@h", DOCTOR_OK, partition="gpu-big")
    assert any("'gpu-big'" in p and "debug, gpu" in p for p in r.problems)
    assert not parse_report("u@h", DOCTOR_OK, partition="gpu").problems


def test_mux_only_argv_cannot_log_in_by_itself():
    from dagster_hpc.transport.openssh import mux_only

    t = SSHTarget("login", jump_hosts=parse_jump_hosts("j1"))
    argv = mux_only(ssh_base_argv(t, "/s/cm", "/s/cfg"))
    assert "-J" not in argv and argv[-2:] == ["-o", "ProxyCommand=false"]
    assert "ControlPath=/s/cm" in argv


def test_end_with_stdin_keeps_the_exit_code_and_stops_the_command_when_stdin_closes(tmp_path):
    marker = tmp_path / "finished"
    # stdin stays open until the command ended by itself (closing it first would stop the
    # command: a race on a loaded machine, exit 143 instead of 3)
    ok = subprocess.Popen(["sh", "-c", _shell.end_with_stdin_command("echo out; exit 3")],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    out = ok.stdout.read()
    assert ok.wait(timeout=30) == 3 and out == b"out\n"
    ok.stdin.close()
    ok.stdout.close()
    # the command would run 60 s; stopping it must take far less (20 s: margin for a loaded machine)
    proc = subprocess.Popen(["sh", "-c", _shell.end_with_stdin_command(f"sleep 60; touch {marker}")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    proc.stdin.close()  # what the remote side sees when our ssh goes away
    assert proc.wait(timeout=20) != 0
    assert not marker.exists()


def test_default_stream_yields_once_and_raises_on_failure():
    from dagster_hpc.errors import RemoteCommandError
    from dagster_hpc.transport.base import CommandResult, Transport

    class Fake(Transport):  # a transport double: only run() matters for the default stream()
        def run(self, command, *, timeout=None, stdin=None):
            return CommandResult(0 if command == "ok" else 2, "data\n", "err\n")

        def put_tree(self, local_dir, remote_dir, *, mode=0o700):
            raise NotImplementedError

        def read_from(self, remote_path, offset, *, max_bytes=4 << 20):
            raise NotImplementedError

    assert list(Fake().stream("ok")) == [b"data\n"]
    with pytest.raises(RemoteCommandError):
        list(Fake().stream("bad"))
