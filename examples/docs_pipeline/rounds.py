"""The document pipeline in four rounds (``./scripts/run-example`` runs this):

1. initial load of a generated corpus (Markdown, HTML, DOCX, PDF, XLSX, PPTX + one file Docling
   cannot read);
2. one document edited, one added, one deleted, one only touched, one renamed, and the broken
   one re-uploaded as a valid PDF (it failed in round 1, so it is retried anyway);
3. nothing changed: no job, no Ray, "up to date: 0 to process";
4. the chunking parameters changed: chunks and embeddings recompute, conversion does not.

Each round is one run of the four assets (Dagster's multiprocess executor) into the instance
in DAGSTER_HOME; it prints, per round and feature, new / stale / orphaned / failed / computed
and which fields made samples stale. ``--json FILE`` writes the same as JSON (tests read it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg

from docs_pipeline import corpus
from docs_pipeline.assets import FAILED_CHECK
from docs_pipeline.features import CHUNKS, CONVERTED, EMBEDDINGS, ENV_PREFIX, SOURCE, Settings

FEATURES = (SOURCE, CONVERTED, CHUNKS, EMBEDDINGS)
DEFAULT_DOCS = 20
# The example's corpus is small: below the library default, so that round 1 shows the Ray path
# and the small rounds the in-process one.
EXAMPLE_IN_PROCESS_MAX = 8
ROUND_4_MAX_CHARS = 600
LABELS = {
    1: "initial load",
    2: "1 edited, 1 added, 1 deleted, 1 touched, 1 renamed; broken one re-uploaded",
    3: "nothing changed",
    4: f"chunking parameters changed (max_chars -> {ROUND_4_MAX_CHARS})",
}
CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _run(instance: dg.DagsterInstance, number: int) -> dict:
    from docs_pipeline.definitions import docs_job

    started = time.monotonic()
    with dg.execute_job(
        dg.reconstructable(docs_job), instance=instance, run_config=CONSOLE, raise_on_error=False
    ) as result:
        status = instance.get_run_by_id(result.run_id).status
        features: dict[str, dict] = {}
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            features["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
        checks = {}
        for e in result.all_events:
            if e.event_type_value == "ASSET_CHECK_EVALUATION":
                check = e.event_specific_data
                metadata = {k: v.value for k, v in check.metadata.items()}
                checks[check.check_name] = {"passed": check.passed, **metadata}
        run_id = result.run_id
    return {
        "round": number,
        "label": LABELS[number],
        "status": status.value,
        "run_id": run_id,
        "wall_s": round(time.monotonic() - started, 2),
        "features": features,
        "checks": checks,
    }


def _fields(md: dict) -> str:
    stale = md.get("stale_fields") or {}
    return ", ".join(f"{k} ({v})" for k, v in stale.items()) or "-"


def table(rounds: list[dict]) -> str:
    header = [
        "round",
        "feature",
        "new",
        "stale",
        "orphaned",
        "failed",
        "computed",
        "where",
        "stale because of",
    ]
    rows = [header]
    for r in rounds:
        for key in FEATURES:
            md = r["features"].get(key)
            if md is None:
                rows.append([str(r["round"]), key, "NOT MATERIALIZED", "", "", "", "", "", ""])
                continue
            failed = f"{md.get('failed_last_time', 0)}->{md.get('failed', 0)}"
            computed = str(md.get("computed", 0))
            if key == CHUNKS and md.get("chunks_written") is not None:
                computed += f" ({md['chunks_written']} chunks)"
            rows.append(
                [
                    str(r["round"]),
                    key,
                    str(md["new"]),
                    str(md["stale"]),
                    str(md["orphaned"]),
                    failed,
                    computed,
                    md.get("path", "-"),
                    _fields(md),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _in_process_rule(settings: Settings) -> str:
    if settings.in_process_max_docs is not None:
        return f"up to {settings.in_process_max_docs} documents"
    return f"below the estimated cost where Ray's fixed {settings.ray_fixed_s:g} s pays"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the document pipeline in four rounds")
    parser.add_argument("--docs", type=int, default=DEFAULT_DOCS, help="documents in the corpus")
    parser.add_argument("--json", type=Path, help="write the per-round results here")
    parser.add_argument("--rounds", type=int, default=4, choices=(1, 2, 3, 4))
    parser.add_argument(
        "--no-repair",
        action="store_true",
        help="round 2 leaves the broken document as it is (it is retried and fails again)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault(ENV_PREFIX + "IN_PROCESS_MAX", str(EXAMPLE_IN_PROCESS_MAX))
    settings = Settings.from_env()
    for path in (settings.corpus_dir, settings.store_root):
        shutil.rmtree(path, ignore_errors=True)  # every invocation starts from an empty folder
    corpus.generate(settings.corpus_dir, args.docs)
    print(
        f"document pipeline: {args.docs} documents + 1 broken in {settings.corpus_dir}, store in "
        f"{settings.store_root}, mode={os.environ.get('DAGSTER_HPC_MODE', 'local')}, "
        f"in-process {_in_process_rule(settings)}",
        flush=True,
    )
    instance = dg.DagsterInstance.get()
    rounds: list[dict] = []
    for number in range(1, args.rounds + 1):
        if number == 2:
            corpus.apply_round_2(settings.corpus_dir, args.docs, repair=not args.no_repair)
        if number == 4:
            os.environ[ENV_PREFIX + "CHUNK_MAX_CHARS"] = str(ROUND_4_MAX_CHARS)
        print(f"\n== round {number}: {LABELS[number]}", flush=True)
        rounds.append(_run(instance, number))
        r = rounds[-1]
        check = r["checks"].get(FAILED_CHECK, {})
        print(
            f"   round {number}: {r['status']} in {r['wall_s']} s; failed documents now: "
            f"{check.get('failed_documents', '?')}",
            flush=True,
        )
    print("\n" + table(rounds))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds}, indent=2, default=str))
    return 0 if all(r["status"] == "SUCCESS" for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
