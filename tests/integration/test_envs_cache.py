"""The env cache on the real test cluster over the project's SSHTransport, as hpcuser: the
example payload environment (dagster-pipes + polars) built from examples/payload-env/uv.lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagster_hpc.envs.build import EnvSpec, build, default_compression, plan
from dagster_hpc.envs.platform import compute_node_platform
from dagster_hpc.envs.ship import EnvShipper, forget_verified
from tests.integration import envs_support as S

# Python run ON a compute node by the bundled interpreter, with no other Python reachable.
PAYLOAD_CHECK = textwrap.dedent("""
    import json, os, shutil, sys
    import dagster_pipes, polars as pl
    df = pl.DataFrame({"x": list(range(1000))}).with_columns((pl.col("x") ** 2).alias("y"))
    print(json.dumps({"executable": sys.executable, "prefix": sys.prefix, "sum": int(df["y"].sum()),
                      "which_python3": shutil.which("python3"), "which_python": shutil.which("python"),
                      "path": os.environ.get("PATH"), "user": os.environ.get("USER")}))
""")


@pytest.fixture(scope="module")
def t(cluster):
    tr = S.transport(cluster)
    yield tr


@pytest.fixture(scope="module")
def bundle_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("env-bundles")


@pytest.fixture(scope="module")
def target_platform(cluster, t, tmp_path_factory):
    # probed through Slurm on a compute node (not this machine's view), then cached locally
    return compute_node_platform(
        t, S.cluster_id(cluster), cache_dir=tmp_path_factory.mktemp("plat"), refresh=True
    )


@pytest.fixture
def remote_base(cluster, t):
    base = S.fresh_remote_base(cluster)
    forget_verified()
    yield base
    forget_verified()
    t.run(f"rm -rf {base}")


def test_probe_reports_the_compute_nodes(target_platform):
    assert target_platform.os == "linux" and target_platform.arch
    assert target_platform.node_python == "/usr/bin/python3"  # what hpcuser's nodes have


@pytest.fixture(scope="module")
def published(cluster, t, bundle_cache, target_platform):
    """The example env published once into a cold remote base (shared by the tests below)."""
    base = S.fresh_remote_base(cluster)
    forget_verified()
    p = plan(EnvSpec(S.EXAMPLE_LOCK, kind="self-contained"), target_platform)
    shipper = EnvShipper(t, base, cluster="test", cache_dir=bundle_cache)
    # the archive ensure() will upload: zstd when the login node has it (ours does), else gzip
    bundle = build(
        p,
        cache_dir=bundle_cache,
        compression=default_compression(p.kind, remote_zstd=shipper.look(p).zstd),
    )
    b0 = t.bytes_sent
    cold = shipper.ensure(p)
    yield {"base": base, "plan": p, "bundle": bundle, "cold": cold, "cold_bytes": t.bytes_sent - b0}
    forget_verified()
    t.run(f"rm -rf {base}")


def test_cold_uploads_the_bundle_once(published):
    cold = published["cold"]
    assert cold.status == "published" and cold.lookup_status == "MISS"
    assert published["cold_bytes"] >= published["bundle"].size > 10_000_000


def test_warm_uploads_zero_bytes_in_one_round_trip(t, bundle_cache, published):
    forget_verified()  # as a new Dagster process would
    b1, r1 = t.bytes_sent, t.roundtrips
    warm = EnvShipper(t, published["base"], cluster="test", cache_dir=bundle_cache).ensure(
        published["plan"]
    )
    assert warm.status == "hit"
    assert t.bytes_sent - b1 == 0 and t.roundtrips - r1 == 1
    assert warm.ref == published["cold"].ref and warm.ref.path.startswith(published["base"])
    perms = t.check(f"stat -c %a {warm.ref.path} {published['base']}/envs").split()
    assert perms == ["700", "700"]


def test_self_contained_env_runs_where_no_other_python_is_on_path(cluster, t, published):
    # on a compute node, as hpcuser (who cannot read /root, where the build host's Python
    # lives), from an empty directory, with PATH pointing nowhere
    ref = published["cold"].ref
    workdir = f"{published['base']}/empty-dir"
    t.check(f"mkdir -p {workdir}")
    out = S.srun(
        t,
        [
            "env",
            "-i",
            "PATH=/nonexistent",
            f"HOME={S.home(cluster)}",
            "USER=" + cluster.user,
            ref.python,
            "-c",
            PAYLOAD_CHECK,
        ],
        chdir=workdir,
    )
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["sum"] == sum(x * x for x in range(1000))
    assert seen["prefix"] == ref.path and seen["executable"].startswith(ref.path)
    assert seen["which_python3"] is None and seen["which_python"] is None
    assert seen["user"] == cluster.user


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("rm {d}/bin/python3.11", "interpreter bin/python missing"),
        ("rm {d}/lib/python3.11/site-packages/polars/__init__.py", "tree checksum mismatch"),
    ],
)
def test_corrupted_entry_is_detected_and_rebuilt(t, bundle_cache, published, damage, reason):
    p = published["plan"]
    d = published["cold"].ref.path
    t.check(damage.format(d=d))
    forget_verified()
    shipper = EnvShipper(t, published["base"], cluster="test", cache_dir=bundle_cache)
    status, _root = shipper.lookup(p)
    assert status.startswith("CORRUPT") and reason in status
    repaired = shipper.ensure(p)
    assert repaired.status == "published" and reason in repaired.lookup_status
    assert repaired.ref.path == d and shipper.lookup(p)[0] == "HIT"
    out = t.check(f"{repaired.ref.python} -c 'import polars; print(polars.__version__)'")
    assert out.strip() == "2.1.0"


# Each process: its own SSH connection, the same cold cache, the same key.
_PUBLISHER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from dagster_hpc.envs.build import EnvSpec, plan
    from dagster_hpc.envs.platform import TargetPlatform
    from dagster_hpc.envs.ship import EnvShipper
    args = json.loads(sys.argv[1])
    plat = TargetPlatform(**args["platform"])
    p = plan(EnvSpec(Path(args["lock"]), kind="wheelhouse"), plat)
    from dagster_hpc.transport.auth import SSHTarget
    from dagster_hpc.transport.ssh import SSHTransport
    t = SSHTransport(SSHTarget(**{**args["target"], "key_paths": tuple(args["target"]["key_paths"])}))
    r = EnvShipper(t, args["base"], cluster="proc", cache_dir=Path(args["cache"])).ensure(p)
    print(json.dumps({"status": r.status, "python": r.ref.python, "bytes": t.bytes_sent}))
""")


def test_two_concurrent_runs_with_a_cold_cache_end_with_one_intact_env(
    cluster, t, bundle_cache, target_platform, remote_base
):
    import dataclasses

    p = plan(EnvSpec(S.EXAMPLE_LOCK, kind="wheelhouse"), target_platform)
    build(p, cache_dir=bundle_cache)  # both processes start uploading at once
    tgt = S.target(cluster)
    args = json.dumps(
        {
            "platform": dataclasses.asdict(target_platform),
            "lock": str(S.EXAMPLE_LOCK),
            "base": remote_base,
            "cache": str(bundle_cache),
            "target": {
                "host": tgt.host,
                "port": tgt.port,
                "user": tgt.user,
                "key_paths": list(tgt.key_paths),
                "known_hosts": tgt.known_hosts,
                "use_agent": False,
            },
        }
    )
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    statuses = sorted(r["status"] for r in results)
    assert statuses.count("published") == 1, statuses  # exactly one unpacked and installed
    assert set(statuses) <= {"published", "published-by-other", "hit"}
    assert results[0]["python"] == results[1]["python"]
    listing = t.check(f"ls -A {remote_base}/envs").split()
    assert p.key in listing
    assert not [n for n in listing if n.startswith((".tmp-", ".trash-"))], listing
    assert t.check(f"ls -A {remote_base}/envs/.incoming").split() == []
    forget_verified()
    assert EnvShipper(t, remote_base, cache_dir=bundle_cache).lookup(p)[0] == "HIT"
    # the offline-installed venv works on a compute node
    out = S.srun(
        t, [results[0]["python"], "-c", "import polars, dagster_pipes; print(polars.__version__)"]
    )
    assert out.strip().splitlines()[-1] == "2.1.0"


def test_wheelhouse_install_can_run_on_a_compute_node(
    cluster, t, bundle_cache, target_platform, remote_base
):
    # what happens automatically when the login node's architecture differs from the nodes'
    from tests.integration.slurm_support import jobs_named

    before = {job for job, _state in jobs_named(cluster, "dagster-hpc-env-install")}
    p = plan(EnvSpec(S.EXAMPLE_LOCK, kind="wheelhouse"), target_platform)
    report = EnvShipper(t, remote_base, cache_dir=bundle_cache, install_on="compute").ensure(p)
    assert report.status == "published"
    after = {
        job
        for job, _state in jobs_named(cluster, "dagster-hpc-env-install", expect=len(before) + 2)
    }
    assert len(after - before) == 2  # the install step and the final check ran as srun steps
    out = S.srun(
        t, [report.ref.python, "-c", "import polars, dagster_pipes, sys; print(sys.prefix)"]
    )
    assert out.strip().splitlines()[-1] == f"{report.ref.path}/venv"


def test_cache_works_the_same_over_the_openssh_controlmaster_transport(
    cluster, bundle_cache, target_platform, remote_base
):
    import shutil
    import tempfile

    from dagster_hpc.ssh_resource import SSHConnectionResource

    control_dir = tempfile.mkdtemp(prefix="dhcm-", dir="/tmp")  # socket paths must stay short
    t = SSHConnectionResource(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_path=str(cluster.key_path),
        use_agent=False,
        known_hosts_file=str(cluster.known_hosts),
        transport="openssh",
        control_dir=control_dir,
    ).get_transport()
    try:
        p = plan(EnvSpec(S.EXAMPLE_LOCK, kind="wheelhouse"), target_platform)
        bundle = build(p, cache_dir=bundle_cache)
        b0 = t.bytes_sent
        assert EnvShipper(t, remote_base, cache_dir=bundle_cache).ensure(p).status == "published"
        assert t.bytes_sent - b0 >= bundle.size
        forget_verified()
        b1, r1 = t.bytes_sent, t.roundtrips
        assert EnvShipper(t, remote_base, cache_dir=bundle_cache).ensure(p).status == "hit"
        assert (t.bytes_sent - b1, t.roundtrips - r1) == (0, 1)
    finally:
        t.close_master()
        shutil.rmtree(control_dir, ignore_errors=True)


def test_a_run_started_during_another_runs_upload_uploads_nothing(
    cluster, t, bundle_cache, target_platform, remote_base
):
    import dataclasses
    import time

    p = plan(EnvSpec(S.EXAMPLE_LOCK, kind="wheelhouse"), target_platform)
    bundle = build(p, cache_dir=bundle_cache)
    tgt = S.target(cluster)
    args = json.dumps(
        {
            "platform": dataclasses.asdict(target_platform),
            "lock": str(S.EXAMPLE_LOCK),
            "base": remote_base,
            "cache": str(bundle_cache),
            "target": {
                "host": tgt.host,
                "port": tgt.port,
                "user": tgt.user,
                "key_paths": list(tgt.key_paths),
                "known_hosts": tgt.known_hosts,
                "use_agent": False,
            },
        }
    )
    root = Path(__file__).resolve().parents[2]

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:  # until its upload shows up
        if t.run(f"ls {remote_base}/envs/.incoming 2>/dev/null | grep -q {p.key}").ok:
            break
        time.sleep(0.05)
    second = start()
    results = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["status"] == "published" and results[0]["bytes"] >= bundle.size
    assert results[1]["status"] in ("published-by-other", "hit") and results[1]["bytes"] == 0
