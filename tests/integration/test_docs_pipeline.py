"""The document pipeline end to end, in its own environment (scripts/docs-env.sh: real Docling,
real Ray, the real MiniLM model), with exactly the command ./scripts/run-example runs
(`python -m docs_pipeline.rounds`, Dagster's multiprocess executor): locally (a one-node Ray
cluster on this machine) and on the test cluster (a 2-node Ray cluster inside a Slurm job, over
real SSH), with exact counts per round.

Corpus: 8 generated documents (the brief profile, formats cycling md, html, docx, pdf, xlsx,
pptx) + 1 file Docling cannot read. Round 1 converts 9 documents on Ray (above
DAGSTER_HPC_DOCS_IN_PROCESS_MAX=6); the small rounds convert in the step's process.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.slurm_support import remote, slurm_env

# a cold machine builds the 2.5 GB env first (3-9 min); one invocation of the rounds takes 2-3 min
# on a quiet machine, 10 at load 20 (the project-wide pytest timeout is 600 s)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
DOCS_ENV_SCRIPT = ROOT / "scripts" / "docs-env.sh"
# Building the env from a cold pip cache took 2.5 min on a quiet machine and 9 min at load 20.
DOCS_ENV_TIMEOUT_S = 1500
# One invocation of the four rounds: ~2-3 min here on a quiet machine (Dagster step processes,
# Docling and model loads dominate); bounded so a hang fails the test instead of CI.
ROUNDS_TIMEOUT_S = 2000
DOCS = 8
IN_PROCESS_MAX = 6
# The failure test's round 1 has ~40-50 chunks, its round 2 ~10-15: this count puts only round
# 1's embeddings on Ray.
EMBED_ON_RAY_ABOVE = 25
TEST_NODE_IP = "echo 127.0.0.$((10 + ${SLURMD_NODENAME#node}))"


@pytest.fixture(scope="module")
def docs_env(cluster) -> Path:
    """The pipeline's environment, importable by the cluster user too (built once, then kept)."""
    env = {**os.environ, "DOCS_ENV_CHECK_USER": cluster.user}
    out = subprocess.run(
        ["bash", str(DOCS_ENV_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=DOCS_ENV_TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the build itself, not the link: another checkout may switch the link while this runs
    return Path(out.stdout.strip().splitlines()[-1]).resolve()


def _rounds(
    docs_env: Path, work: Path, env: dict[str, str], *args: str, umask: int = -1
) -> tuple[dict, str]:
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o777)  # slurm mode: the cluster user's jobs read the corpus, write the store
    home = work / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    out_json = work / "rounds.json"
    env = {
        **env,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'examples'}",
        "DAGSTER_HOME": str(home),
        "DAGSTER_HPC_DOCS_DIR": str(work / "corpus"),
        "DAGSTER_HPC_DOCS_STORE": str(work / "store"),
        "DAGSTER_HPC_DOCS_IN_PROCESS_MAX": str(IN_PROCESS_MAX),
    }
    log = work / "rounds.log"  # kept with the work dir when the test fails
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(docs_env / "bin" / "python"), "-m", "docs_pipeline.rounds", "--docs", str(DOCS)]
            + ["--json", str(out_json), *args],
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=ROUNDS_TIMEOUT_S,
            umask=umask,
            check=False,
        )
    output = log.read_text()
    print(output[-6000:])
    assert proc.returncode == 0, f"see {log}:\n" + output[-6000:]
    return json.loads(out_json.read_text()), output


def _counts(md: dict) -> tuple[int, int, int, int, int, int]:
    return (
        md["new"],
        md["stale"],
        md["orphaned"],
        md["failed_last_time"],
        md["computed"],
        md["failed"],
    )


def _check_four_rounds(result: dict, output: str) -> None:
    r1, r2, r3, r4 = (r["features"] for r in result["rounds"])
    assert all(r["status"] == "SUCCESS" for r in result["rounds"])

    # round 1: 9 documents; the broken one fails (named in the log), the rest is stored
    assert _counts(r1["docs/source"]) == (9, 0, 0, 0, 9, 0)
    assert _counts(r1["docs/converted"]) == (9, 0, 0, 0, 9, 1)
    assert r1["docs/converted"]["path"] == "ray"
    assert r1["docs/converted"]["ray/written"] == 8 and r1["docs/converted"]["ray/failed"] == 1
    assert "broken-scan.pdf) could not be converted (attempt 1; retried next run)" in output
    assert _counts(r1["docs/chunks"]) == (8, 0, 0, 0, 8, 0)
    chunks_1 = r1["docs/chunks"]["chunks_written"]
    assert _counts(r1["docs/embeddings"]) == (chunks_1, 0, 0, 0, chunks_1, 0)
    assert r1["docs/embeddings"]["dimension"] == 384, "the real all-MiniLM-L6-v2"
    first_check = result["rounds"][0]["checks"]["no_failed_documents"]
    assert (first_check["passed"], first_check["failed_documents"]) == (False, 1)

    # round 2: edited (content), added, deleted, touched (nothing), renamed (path only), and the
    # broken one re-uploaded: it failed last time, so it comes back whatever its content
    src = r2["docs/source"]
    assert _counts(src) == (1, 3, 1, 0, 4, 0)
    assert src["stale_fields"] == {"content_hash": 2, "path": 1, "size": 2}
    assert src["mtime_refreshed"] == 1, "the touched file: new mtime recorded, nothing else"
    conv = r2["docs/converted"]
    assert _counts(conv) == (1, 1, 1, 1, 3, 0), "edited + added + previously failed"
    assert conv["stale_fields"] == {"markdown": 1, "pages": 1, "tables": 1}
    assert conv["path"] == "in-process" and "ray/nodes" not in conv
    chunks = r2["docs/chunks"]
    assert _counts(chunks)[:2] == (2, 1) and chunks["computed"] == 3
    assert chunks["orphaned"] > 0, "the deleted document's chunks"
    emb = r2["docs/embeddings"]
    assert emb["orphaned"] == chunks["orphaned"]
    # the edit changed the last section only: its chunk's vector is recomputed, not the others
    assert emb["stale"] == 1, emb
    assert result["rounds"][1]["checks"]["no_failed_documents"]["passed"] is True

    # round 3: nothing changed: no conversion, no Ray, nothing computed anywhere
    for key, md in r3.items():
        assert _counts(md) == (0, 0, 0, 0, 0, 0), (key, md)
        assert md["path"] == "none"
    assert "ray/nodes" not in r3["docs/converted"] and "slurm/job_id" not in r3["docs/converted"]
    run3 = result["rounds"][2]["run_id"]
    assert f"{run3} - docs__converted - docs/converted: up to date: 0 to process" in output

    # round 4: chunking parameters changed: every document re-chunked, conversion untouched
    assert _counts(r4["docs/source"]) == (0, 0, 0, 0, 0, 0)
    assert _counts(r4["docs/converted"]) == (0, 0, 0, 0, 0, 0)
    assert _counts(r4["docs/chunks"]) == (0, 9, 0, 0, 9, 0)
    assert r4["docs/chunks"]["stale_reasons"] == {"code_changed": 9}
    emb4 = r4["docs/embeddings"]
    assert emb4["computed"] == emb4["new"] + emb4["stale"] > 0


def test_four_rounds_locally_with_ray_on_this_machine(docs_env, tmp_path) -> None:
    result, output = _rounds(docs_env, tmp_path, dict(os.environ))
    _check_four_rounds(result, output)
    r1 = result["rounds"][0]["features"]["docs/converted"]
    assert r1["ray/nodes"] == 1 and "dagster_hpc/elapsed_s" in r1


def test_a_failing_document_is_retried_next_run_and_reported_again(docs_env, tmp_path) -> None:
    """Not re-uploaded: it is handed to Docling again (attempt 2), fails again, stays counted.
    Round 1's chunks (more than EMBED_ON_RAY_ABOVE) are embedded by Ray actors, round 2's few
    in this process."""
    env = {**os.environ, "DAGSTER_HPC_DOCS_EMBEDDING_MODEL": "hashing"}
    env["DAGSTER_HPC_DOCS_IN_PROCESS_MAX"] = "100"
    env["DAGSTER_HPC_DOCS_EMBED_IN_PROCESS_MAX"] = str(EMBED_ON_RAY_ABOVE)
    result, output = _rounds(docs_env, tmp_path, env, "--rounds", "2", "--no-repair")
    conv = result["rounds"][1]["features"]["docs/converted"]
    assert (conv["failed_last_time"], conv["failed"]) == (1, 1)
    assert "(attempt 2; retried next run)" in output
    check = result["rounds"][1]["checks"]["no_failed_documents"]
    assert (check["passed"], check["failed_documents"]) == (False, 1)
    r1 = result["rounds"][0]["features"]
    emb1, emb2 = r1["docs/embeddings"], result["rounds"][1]["features"]["docs/embeddings"]
    chunks = r1["docs/chunks"]["chunks_written"]
    assert chunks > EMBED_ON_RAY_ABOVE >= emb2["computed"] > 0, (chunks, emb2)
    assert (emb1["path"], emb1["computed"], emb1["ray/written"]) == ("ray", chunks, chunks)
    assert emb1["dimension"] == 256, "the hashing model's vectors, written by the actors"
    assert emb2["path"] == "in-process" and "ray/nodes" not in emb2


def _our_jobs(cluster, base: str) -> list[str]:
    """Our conversion jobs (by the run directory under this test's own remote base)."""
    home = remote(cluster, 'printf %s "$HOME"').strip()
    root = base.replace("~", home, 1)
    text = remote(
        cluster,
        "sacct -X -n -P --starttime now-2hours --name=dhpc-docs__converted "
        "--format=JobID,State,WorkDir",
    )
    return [line for line in text.splitlines() if f"{root}/" in line]


def test_four_rounds_on_the_test_cluster_with_a_two_node_ray(cluster, docs_env, tmp_path) -> None:
    env = slurm_env(
        cluster,
        python=str(docs_env / "bin" / "python"),
        time_limit="15",
        mem="3G",
    )
    env.update(
        {
            "DAGSTER_HPC_DOCS_RAY_NODES": "2",
            "DAGSTER_HPC_DOCS_RAY_NODE_IP_COMMAND": TEST_NODE_IP,
            "DAGSTER_HPC_DOCS_RAY_ALLOW_LOOPBACK": "1",
        }
    )
    base = env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"]
    # the cluster user's jobs read the corpus and write the store: a directory it can reach
    work = Path("/tmp") / f"dhpc-docs-{os.getpid()}-{time.monotonic_ns()}"
    # umask 0: the cluster user's jobs add tables to the store this process creates
    result, output = _rounds(docs_env, work, env, umask=0o000)
    _check_four_rounds(result, output)
    r1 = result["rounds"][0]["features"]["docs/converted"]
    assert r1["ray/nodes"] == 2, "a Ray cluster across two Slurm nodes"
    assert r1["slurm/state"] == "COMPLETED"
    jobs = _our_jobs(cluster, base)
    # exactly one Slurm job in four rounds: round 1's conversion (rounds 2-4: none)
    assert len(jobs) == 1, jobs
    assert jobs[0].split("|")[0] == str(r1["slurm/job_id"])
    # passed: remove what it made (a failure keeps both for a look)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    remote(cluster, f"rm -rf {shlex.quote(base.replace('~/', '', 1))}", timeout=60)
