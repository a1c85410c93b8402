"""Docling conversion: one converter per process (or Ray actor), loaded once, used for many files.

Model-free by default: DOCX, HTML, Markdown, XLSX and PPTX through Docling's own backends, PDF
through the native text pipeline (``NativePdfPipeline``: the PDF's text layer via docling-parse,
no layout, OCR or table model, so no weights are needed). ``pdf_pipeline="standard"`` selects Docling's
full PDF pipeline (layout + table models) for sites that have its weights on disk
(``artifacts_path``); it needs ``docling-slim[models-local]`` in the environment.

A document Docling cannot convert never raises out of here: it comes back as a row with
``status="failed"`` and the error text, so one bad file does not fail its batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

# Bump when what this module produces from the same Docling output changes (markdown export
# options, page/table counting): part of docs/converted's code version.
CONVERTER_VERSION = "1"
# Default bound on one document's conversion (Docling's own document_timeout): a pathological
# file must not hold an actor (and its node-hours) forever.
DOCUMENT_TIMEOUT_S = 120.0
# Files above this size are refused before Docling opens them (recorded as failed).
MAX_FILE_BYTES = 200 * 1024 * 1024
STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"
# Longest error text stored per document (Docling's messages can carry whole stack traces).
MAX_ERROR_CHARS = 2000
# The result columns and their Arrow type names (pyarrow is imported where batches are built).
RESULT_TYPES = {
    "markdown": "large_string",
    "pages": "int32",
    "tables": "int32",
    "status": "string",
    "error": "string",
    "convert_s": "float64",  # wall seconds of this document's conversion (cost.py learns from it)
}
# Columns of the todo table that are inputs only (not stored in docs/converted).
INPUT_ONLY = ("path", "size", "estimated_s")
SUFFIX_FORMATS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "md",
    ".markdown": "md",
    ".xlsx": "xlsx",
    ".pptx": "pptx",
}


def docling_version() -> str:
    """The installed Docling distribution's version (docling-slim or docling), without
    importing Docling (cheap: the Dagster side calls it to build code versions)."""
    for dist in ("docling-slim", "docling"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not-installed"


@dataclass(frozen=True)
class ConverterConfig:
    """How documents are converted. Everything that changes the output is in ``code_version``."""

    pdf_pipeline: Literal["native", "standard"] = "native"
    artifacts_path: str | None = None  # standard pipeline: directory with Docling's model weights
    document_timeout_s: float = DOCUMENT_TIMEOUT_S
    max_file_bytes: int = MAX_FILE_BYTES
    pdf_parser_threads: int = 1  # one per actor: the actors are the parallelism

    def __post_init__(self) -> None:
        if self.pdf_pipeline not in ("native", "standard"):
            raise ValueError(
                f"ConverterConfig: pdf_pipeline={self.pdf_pipeline!r} must be 'native' (model-free) "
                "or 'standard' (Docling's layout model; needs artifacts_path with its weights)"
            )
        if self.pdf_pipeline == "standard" and not self.artifacts_path:
            raise ValueError(
                "ConverterConfig: pdf_pipeline='standard' needs artifacts_path= (a directory "
                "holding Docling's layout/table model weights, e.g. from `docling-tools models "
                "download` on a machine with internet): nothing is downloaded at run time"
            )
        if self.document_timeout_s <= 0 or self.max_file_bytes <= 0:
            raise ValueError("ConverterConfig: document_timeout_s and max_file_bytes must be > 0")

    @property
    def code_version(self) -> str:
        """Docling's version + the output-relevant settings (not paths or limits)."""
        semantic = {"pdf_pipeline": self.pdf_pipeline, "converter": CONVERTER_VERSION}
        digest = hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:8]
        return f"docling-{docling_version()}/cfg-{digest}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ConverterConfig:
        return cls(**json.loads(text))


def _build_converter(config: ConverterConfig) -> Any:
    try:
        import docling  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "Docling is not installed in this interpreter: run the pipeline in its environment "
            "(`bash scripts/docs-env.sh` prints its path; see docs/document-pipeline.md)"
        ) from exc
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, NativePdfFormatOption, PdfFormatOption

    if config.pdf_pipeline == "native":
        from docling.datamodel.pipeline_options import NativePdfPipelineOptions

        options = NativePdfPipelineOptions(
            parser_threads=config.pdf_parser_threads,
            document_timeout=config.document_timeout_s,
        )
        pdf = NativePdfFormatOption(pipeline_options=options)
    else:
        from docling.datamodel.pipeline_options import PdfPipelineOptions

        options = PdfPipelineOptions(
            artifacts_path=config.artifacts_path,
            document_timeout=config.document_timeout_s,
            do_ocr=False,
        )
        pdf = PdfFormatOption(pipeline_options=options)
    return DocumentConverter(
        allowed_formats=_formats(),
        format_options={InputFormat.PDF: pdf},
    )


def _failed(error: str) -> dict[str, Any]:
    return {
        "markdown": None,
        "pages": None,
        "tables": None,
        "status": STATUS_FAILED,
        "error": error[:MAX_ERROR_CHARS],
    }


def _formats() -> list[Any]:
    from docling.datamodel.base_models import InputFormat

    return [
        InputFormat.PDF,
        InputFormat.DOCX,
        InputFormat.HTML,
        InputFormat.MD,
        InputFormat.XLSX,
        InputFormat.PPTX,
    ]


class DoclingConverter:
    """Loads Docling once, with every format's pipeline initialised (a warm converter: the
    first document of a format pays nothing extra); converts files by path. Callable on a Ray
    Data batch (an actor)."""

    def __init__(self, config: ConverterConfig | str | None = None):
        if isinstance(config, str):
            config = ConverterConfig.from_json(config)
        self.config = config or ConverterConfig()
        self._converter = _build_converter(self.config)
        for fmt in _formats():
            self._converter.initialize_pipeline(fmt)

    def convert_file(self, path: str) -> dict[str, Any]:
        """markdown, pages, tables, status, error and convert_s for one file; never raises for
        a bad file."""
        started = time.perf_counter()
        row = self._convert(path)
        row["convert_s"] = round(time.perf_counter() - started, 4)
        return row

    def _convert(self, path: str) -> dict[str, Any]:
        from docling.datamodel.base_models import ConversionStatus
        from docling.exceptions import ConversionError

        file = Path(path)
        if file.suffix.lower() not in SUFFIX_FORMATS:
            return _failed(
                f"unsupported file type {file.suffix!r} (supported: {sorted(SUFFIX_FORMATS)})"
            )
        try:
            size = file.stat().st_size
        except OSError as exc:
            return _failed(f"cannot read {path}: {exc}")
        if size > self.config.max_file_bytes:
            return _failed(f"{size} bytes is above max_file_bytes={self.config.max_file_bytes}")
        try:
            result = self._converter.convert(file, raises_on_error=False)
        except (ConversionError, OSError, ValueError, RuntimeError) as exc:
            # Docling raises for inputs it cannot even open (format detection, a backend crash)
            return _failed(f"{type(exc).__name__}: {exc}")
        errors = "; ".join(e.error_message for e in result.errors)
        if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
            return _failed(f"Docling {result.status.value}: {errors or 'no error message'}")
        doc = result.document
        return {
            "markdown": doc.export_to_markdown(),
            "pages": doc.num_pages(),
            "tables": len(doc.tables),
            "status": STATUS_OK if result.status == ConversionStatus.SUCCESS else STATUS_PARTIAL,
            "error": None,
        }

    def __call__(self, batch: Any) -> Any:
        """Ray Data ``map_batches`` (``batch_format="pyarrow"``): the batch plus the results,
        with explicit types (a batch where every document failed still has integer columns)."""
        import pyarrow as pa

        rows = [self.convert_file(str(p)) for p in batch.column("path").to_pylist()]
        for key, dtype in RESULT_TYPES.items():
            batch = batch.append_column(
                key, pa.array([r[key] for r in rows], type=getattr(pa, dtype)())
            )
        return batch


DATA_VERSION_BY_FIELD = "data_version_by_field"


def finish_batch(batch: Any) -> Any:
    """The rows docs/converted stores: the conversion's results (the source's path and size stay
    in docs/source) and data versions overridden with hashes of the output, so a re-conversion
    that yields the same markdown leaves chunks and embeddings up to date."""

    def digest(value: Any) -> str | None:
        return None if value is None else hashlib.sha256(str(value).encode()).hexdigest()

    import pyarrow as pa

    columns = {
        name: pa.array([digest(v) for v in batch.column(name).to_pylist()], pa.string())
        for name in ("markdown", "pages", "tables")
    }
    struct = pa.StructArray.from_arrays(list(columns.values()), names=list(columns))
    kept = [c for c in batch.column_names if c not in INPUT_ONLY]
    return batch.select(kept).append_column(DATA_VERSION_BY_FIELD, struct)


def convert_table(todo: Any, config: ConverterConfig | None = None) -> Any:
    """The in-process path (no Ray): one converter, the todo table's files one after another;
    the same rows as the Ray path writes."""
    return finish_batch(DoclingConverter(config)(todo))
