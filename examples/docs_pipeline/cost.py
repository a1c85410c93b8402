"""What converting the documents will cost, estimated before anything runs, and where it runs.

The estimate is seconds of one CPU per document: ``SECONDS_PER_DOC`` + the file's size x its
format's rate (``SECONDS_PER_MB``), from the source metadata only (no file is opened). Once the
store holds conversions, the rates come from them instead (``convert_s`` of every converted
document, per format: ``measured_rates``), so a site's own documents set its figures.

Where conversion runs (``choose_route``): Ray costs a fixed price before its first document
(``RAY_FIXED_S``: a one-node cluster's start, the actors importing Docling, Ray Data's set-up;
measured with benchmarks/documents.py) and then computes on ``workers`` CPUs; this process
computes at once on ``in_process_cpus`` (1 for Docling; every core for torch). Ray is worth it
when ``est / p > RAY_FIXED_S + est / w``, i.e. above ``threshold_s = RAY_FIXED_S * p * w /
(w - p)`` CPU seconds of estimated work (with p = 1: ``RAY_FIXED_S * w / (w - 1)``; never when
``w <= p``). ``in_process_max_docs`` (a count) overrides the rule when set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

# Seconds per MB of file, Docling 2.143 with the native (model-free) PDF pipeline: the plain
# single-process loop of benchmarks/documents.py on its 200-document report corpus, this
# project's 2-core machine at load average ~1 (round1_loop_per_format of two runs, 2026-12-02:
# e.g. PDF 33.5 and 28.5): text formats are cheap per byte, a PDF's text layer is not.
SECONDS_PER_MB = {
    "md": 1.4,
    "html": 1.3,
    "docx": 3.0,
    "pdf": 33.5,
    "xlsx": 4.6,
    "pptx": 5.5,
}
# A format without a rate is costed like the most expensive one (an over-estimate only moves a
# borderline increment to Ray).
UNKNOWN_SECONDS_PER_MB = max(SECONDS_PER_MB.values())
# Per document, whatever its size (opening, format detection, the markdown export).
SECONDS_PER_DOC = 0.03
# A format's measured rate is used from this many converted documents of it on.
MIN_MEASURED_DOCS = 3
# The Ray path's fixed price on this machine (local mode, 2 cores, load ~1): the Ray job's wall
# minus Docling's own seconds spread over the actors (cluster start and stop, the actors importing
# Docling, Ray Data's set-up and scheduling, the sink's Delta commits, the CPU those take from the
# converters). benchmarks/documents.py reports it as round1_ray.fixed_s: 21.7 and 22.0 s in two
# runs (2026-12-02).
# A site sets its own (queue wait included) with DAGSTER_HPC_DOCS_RAY_FIXED_S.
RAY_FIXED_S = 22.0
MB = 1024 * 1024

ROUTE_IN_PROCESS = "in-process"
ROUTE_RAY = "ray"


def suffix_format(path: str) -> str:
    suffix = PurePath(path).suffix.lower().lstrip(".")
    return {"htm": "html", "markdown": "md"}.get(suffix, suffix)


def estimate_seconds(
    paths: Sequence[str], sizes: Sequence[int], rates: Mapping[str, float] | None = None
) -> list[float]:
    """Estimated CPU seconds of converting each document (``rates``: seconds per MB by format,
    over the defaults)."""
    table = {**SECONDS_PER_MB, **(rates or {})}
    return [
        SECONDS_PER_DOC
        + max(size or 0, 0) / MB * table.get(suffix_format(path), UNKNOWN_SECONDS_PER_MB)
        for path, size in zip(paths, sizes, strict=True)
    ]


def measured_rates(
    paths: Sequence[str], sizes: Sequence[int], seconds: Sequence[float | None]
) -> dict[str, float]:
    """Seconds per MB by format from past conversions (formats with at least
    ``MIN_MEASURED_DOCS`` of them), the per-document constant taken off."""
    spent: dict[str, float] = {}
    mb: dict[str, float] = {}
    count: dict[str, int] = {}
    for path, size, sec in zip(paths, sizes, seconds, strict=True):
        if sec is None or not size or size <= 0:
            continue
        fmt = suffix_format(path)
        spent[fmt] = spent.get(fmt, 0.0) + max(sec - SECONDS_PER_DOC, 0.0)
        mb[fmt] = mb.get(fmt, 0.0) + size / MB
        count[fmt] = count.get(fmt, 0) + 1
    return {
        fmt: round(spent[fmt] / mb[fmt], 3)
        for fmt in spent
        if count[fmt] >= MIN_MEASURED_DOCS and mb[fmt] > 0
    }


@dataclass(frozen=True)
class Route:
    """Where this run converts, and the figures it was decided from (reported as metadata)."""

    where: str  # ROUTE_IN_PROCESS or ROUTE_RAY
    documents: int
    estimated_s: float
    threshold_s: float
    ray_fixed_s: float
    workers: int
    rule: str  # "cost" or "count" (in_process_max_docs)
    rates: Mapping[str, float]

    def reason(self) -> str:
        if self.rule == "count":
            cmp = "<=" if self.where == ROUTE_IN_PROCESS else ">"
            return f"{self.documents} document(s) {cmp} in_process_max_docs={int(self.threshold_s)}"
        cmp = "<=" if self.where == ROUTE_IN_PROCESS else ">"
        if not math.isfinite(self.threshold_s):
            return (
                f"~{self.estimated_s:.1f} CPU s; Ray's {self.workers} worker(s) are no more than "
                "this process uses"
            )
        return (
            f"~{self.estimated_s:.1f} CPU s {cmp} {self.threshold_s:.1f} s, where Ray's "
            f"fixed {self.ray_fixed_s:g} s is won back on {self.workers} workers"
        )

    def metadata(self) -> dict[str, Any]:
        threshold = self.threshold_s if math.isfinite(self.threshold_s) else -1
        return {
            "route/where": self.where,
            "route/rule": self.rule,
            "route/estimated_s": round(self.estimated_s, 2),
            "route/threshold": round(threshold, 2),
            "route/ray_fixed_s": self.ray_fixed_s,
            "route/workers": self.workers,
            "route/seconds_per_mb": dict(sorted(self.rates.items())),
        }


def in_process_threshold_s(ray_fixed_s: float, workers: int, in_process_cpus: int = 1) -> float:
    """CPU seconds of estimated work up to which computing here (on ``in_process_cpus``) beats
    paying Ray's fixed price for ``workers`` CPUs."""
    if workers <= in_process_cpus:
        return math.inf
    return ray_fixed_s * in_process_cpus * workers / (workers - in_process_cpus)


def choose_route(
    documents: int,
    estimated_s: float,
    *,
    workers: int,
    ray_fixed_s: float = RAY_FIXED_S,
    in_process_max_docs: int | None = None,
    rates: Mapping[str, float] | None = None,
    in_process_cpus: int = 1,
) -> Route:
    if in_process_max_docs is not None:
        where = ROUTE_IN_PROCESS if documents <= in_process_max_docs else ROUTE_RAY
        threshold, rule = float(in_process_max_docs), "count"
    else:
        threshold, rule = in_process_threshold_s(ray_fixed_s, workers, in_process_cpus), "cost"
        where = ROUTE_IN_PROCESS if estimated_s <= threshold else ROUTE_RAY
    return Route(
        where, documents, estimated_s, threshold, ray_fixed_s, workers, rule, dict(rates or {})
    )
