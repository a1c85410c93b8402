"""A second, private test cluster for the fault tests: they restart slurmctld, slurmdbd and sshd,
set nodes DOWN and fill filesystems, which must never hit the shared cluster others' tests use.

``cluster/up.sh`` brings it up in its own CONFDIR with every port of its own (2 nodes, no GPU
nodes, the shared cluster's payload interpreter and client key: nothing to build, no key to
append) and ``cluster/down.sh CONFDIR --purge`` stops exactly its daemons by pid file. The login
node's PATH starts with a directory of shims (sshd ``SetEnv``): ``squeue`` counts its calls, and
``tar``/``sbatch`` pause while a pause file exists (the tests kill the Dagster process there).

Start cost: ~25 s on an idle machine (12 s of it mariadb-install-db). Set
DAGSTER_HPC_FAULT_CLUSTER=CONFDIR to use (and keep) an instance that is already up.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.conftest import TestCluster, _read_env, cluster_at

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 300
DOWN_TIMEOUT_S = 120
# Ports of an instance: base .. base+PORT_SPAN-1 (ctld, dbd, mysql, 3 sshd, then the slurmds).
PORT_SPAN = 10
PORT_RANGE = (21000, 29000)
NODES = 2
# How long a daemon may take to exit after SIGTERM (slurmctld saves its state first).
DAEMON_STOP_S = 30
POLL_S = 0.1
# A shim waits at most this long for its pause file to go (a test that died must not hang it).
SHIM_PAUSE_MAX_S = 120

_SQUEUE_SHIM = """#!/bin/sh
# fault-test shim: count scheduler queries (with their arguments), then run the real squeue
echo "$(date +%s.%N) $$ $*" >> {calls}
exec /usr/bin/squeue "$@"
"""
_PAUSE_SHIM = """#!/bin/sh
# fault-test shim: while {pause} exists, write its pid and its shell's to {entered} and wait
# (bounded), then run {real}
if [ -e {pause} ]; then
  echo "$$ $PPID" >> {entered}
  i=0
  while [ -e {pause} ] && [ "$i" -lt {max_ticks} ]; do sleep 0.1; i=$((i + 1)); done
fi
exec {real} "$@"
"""


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port_base() -> int:
    """A run of PORT_SPAN free ports (other engineers may run an instance of their own)."""
    lo, hi = PORT_RANGE
    start = lo + (os.getpid() * PORT_SPAN) % (hi - lo)
    for i in range(0, hi - lo, PORT_SPAN):
        base = lo + (start - lo + i) % (hi - lo)
        if all(_free(base + k) for k in range(PORT_SPAN)):
            return base
    raise AssertionError(f"no {PORT_SPAN} free ports in {PORT_RANGE}")


@dataclass
class FaultCluster:
    confdir: Path
    up_env: dict[str, str]  # the tunables: a restore runs up.sh with exactly these
    owned: bool  # brought up by this session (torn down at its end)
    cluster: TestCluster = field(init=False)

    def __post_init__(self) -> None:
        self.cluster = cluster_at(self.confdir)

    # --- paths -------------------------------------------------------------------------------
    @property
    def squeue_calls_file(self) -> Path:
        return _calls_file(self.confdir)

    def pause_file(self, tool: str) -> Path:
        return _pause_file(self.confdir, tool)

    def entered_file(self, tool: str) -> Path:
        return _entered_file(self.confdir, tool)

    # --- Slurm as root on this machine (not through the login node: no shim counts these) ----
    def slurm(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, "SLURM_CONF": str(self.cluster.slurm_conf)}
        out = subprocess.run(
            list(args), capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(f"{args} exited {out.returncode}: {out.stderr}")
        return out.stdout

    def squeue_calls(self, *, single_job: bool | None = None) -> int:
        """squeue calls on the login node so far; ``single_job``: only the lookups of one job
        (``--jobs``: a final record waiting for slurmctld to end its job), or only the queue
        queries (the machine-wide poll, gc, reattach)."""
        try:
            lines = self.squeue_calls_file.read_text().splitlines()
        except FileNotFoundError:
            return 0
        if single_job is None:
            return len(lines)
        return sum(("--jobs" in line.split()) == single_job for line in lines)

    # --- daemons -------------------------------------------------------------------------------
    def pid(self, pidfile: str, comm: str) -> int | None:
        path = self.confdir / pidfile
        try:
            pid = int(path.read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return pid
        except (FileNotFoundError, ValueError):
            return None
        return None

    def stop_daemon(self, pidfile: str, comm: str) -> int:
        """SIGTERM the daemon of ``pidfile`` (checked against its program name), wait for it."""
        pid = self.pid(pidfile, comm)
        assert pid is not None, f"{comm} of {self.confdir} is not running"
        os.kill(pid, 15)
        deadline = time.monotonic() + DAEMON_STOP_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return pid

    def up(self) -> str:
        """cluster/up.sh with this instance's tunables: starts whatever is not running."""
        out = subprocess.run(
            ["bash", str(REPO / "cluster" / "up.sh"), str(self.confdir)],
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
            env=self.up_env,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"cluster/up.sh {self.confdir} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def nodes_idle(self) -> bool:
        text = self.slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        states = [line.split()[1] for line in text.splitlines() if len(line.split()) == 2]
        return len(states) == NODES and all(s == "idle" for s in states)


def _calls_file(confdir: Path) -> Path:
    return confdir / "log" / "squeue-calls.log"


def _pause_file(confdir: Path, tool: str) -> Path:
    return confdir / "shim" / f"pause-{tool}"


def _entered_file(confdir: Path, tool: str) -> Path:
    return confdir / "log" / f"{tool}-paused.log"


def write_shims(confdir: Path) -> None:
    """The login node's PATH shims (see the module docstring); up.sh creates log/ (1777)."""
    shim_dir = confdir / "shim"
    shim_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    shims = {"squeue": _SQUEUE_SHIM.format(calls=shlex.quote(str(_calls_file(confdir))))}
    for tool, real in (("tar", "/usr/bin/tar"), ("sbatch", "/usr/bin/sbatch")):
        shims[tool] = _PAUSE_SHIM.format(
            pause=shlex.quote(str(_pause_file(confdir, tool))),
            entered=shlex.quote(str(_entered_file(confdir, tool))),
            real=real,
            max_ticks=int(SHIM_PAUSE_MAX_S / 0.1),
        )
    for name, text in shims.items():
        path = shim_dir / name
        path.write_text(text)
        path.chmod(0o755)


def _alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 here may reap daemons late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def start(shared: TestCluster) -> FaultCluster:
    """Bring up a private instance (or adopt DAGSTER_HPC_FAULT_CLUSTER)."""
    reuse = os.environ.get("DAGSTER_HPC_FAULT_CLUSTER")
    confdir = Path(reuse) if reuse else Path(f"/var/tmp/dhpc-faults-{os.getpid()}")
    env_file = confdir / "up-env.sh"
    if reuse and env_file.exists():
        up_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    else:
        base = pick_port_base()
        up_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NODES": str(NODES),
            "GPU_NODES": "0",
            "PREEMPT_NODES": "0",
            "PAYLOAD_ENV": "0",
            "PAYLOAD_PYTHON": _read_env(shared.confdir)["SLURM_TEST_PAYLOAD_PYTHON"],
            "ETC_LINK": "0",
            "SSH_EXTRA": "0",
            "SKIP_APT": "1",
            "SMOKE": "0",
            "LOGIN_PATH": str(confdir / "shim"),
            "CLIENT_KEY": str(shared.key_path),
            "CLUSTER": "faultcluster",
            "CTLD_PORT": str(base),
            "DBD_PORT": str(base + 1),
            "MYSQL_PORT": str(base + 2),
            "SSH_PORT": str(base + 3),
            "SSH_JUMP_PORT": str(base + 4),
            "SSH_OTP_PORT": str(base + 5),
            "SLURMD_BASE_PORT": str(base + 6),
        }
        confdir.mkdir(mode=0o755, exist_ok=True)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in up_env.items()))
    write_shims(confdir)  # before the first login
    started = time.monotonic()
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "up.sh"), str(confdir)],
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        env=up_env,
        check=False,
    )
    if out.returncode != 0:
        stop_dir(confdir)
        raise AssertionError(f"the fault cluster did not come up:\n{out.stdout}{out.stderr}")
    fc = FaultCluster(confdir, up_env, owned=not reuse)
    print(f"\nfault cluster {confdir} up in {time.monotonic() - started:.1f} s")
    return fc


def stop_dir(confdir: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "cluster" / "down.sh"), str(confdir), "--purge"],
        capture_output=True,
        text=True,
        timeout=DOWN_TIMEOUT_S,
        check=False,
    )


def stop(fc: FaultCluster) -> None:
    if fc.owned:
        stop_dir(fc.confdir)
