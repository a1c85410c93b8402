"""A deterministic document corpus for the pipeline: DOCX, HTML, Markdown and PDF files (PDFs
with a real text layer, so Docling's model-free native PDF pipeline reads them), plus one file
that makes Docling fail. Nothing is downloaded: the text comes from a seeded generator.

The same (index, version, seed) always gives the same bytes (fixed timestamps in the DOCX zip
and the PDF), so content hashes are stable across machines and runs.

    python -m docs_pipeline.corpus DIR --docs 200     # needs fpdf2 and python-docx
"""

from __future__ import annotations

import argparse
import io
import os
import random
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("md", "html", "docx", "pdf")
BROKEN_NAME = "broken-scan.pdf"
# A fixed instant for every timestamp inside generated files (reproducible bytes).
FIXED_DATE = (2026, 1, 1, 0, 0, 0)
_WORDS = (
    "sample provenance cluster allocation node queue batch field feature pipeline vector "
    "document conversion chunk embedding model weight storage shard actor driver partition "
    "result metric latency throughput memory scheduler account project budget energy hour "
    "research dataset table column record version change lineage graph asset check signal"
).split()


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Content:
    """What a generated document says, independent of its file format."""

    title: str
    sections: tuple[Section, ...]
    table: tuple[tuple[str, ...], ...] = field(default=())


def content(index: int, version: int = 1, seed: int = 0, sections: int | None = None) -> Content:
    """Document ``index`` in ``version``: a later version changes the last paragraph only, as a
    real edit would (earlier chunks keep their text)."""
    rng = random.Random(f"{seed}:{index}")
    n_sections = sections if sections is not None else rng.randint(2, 5)

    def sentence() -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 16))]
        return " ".join(words).capitalize() + "."

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.randint(3, 6)))

    secs = [
        Section(
            f"Section {s + 1}: {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
            tuple(paragraph() for _ in range(rng.randint(2, 4))),
        )
        for s in range(n_sections)
    ]
    if version > 1:
        last = secs[-1]
        edit = f"Revision {version}: {paragraph()}"
        secs[-1] = Section(last.heading, (*last.paragraphs[:-1], edit))
    table = (("metric", "value"),) + tuple(
        (rng.choice(_WORDS), str(rng.randint(1, 999))) for _ in range(rng.randint(2, 4))
    )
    return Content(f"Report {index:04d}", tuple(secs), table)


def render_markdown(doc: Content) -> bytes:
    lines = [f"# {doc.title}", ""]
    for sec in doc.sections:
        lines += [f"## {sec.heading}", ""]
        for para in sec.paragraphs:
            lines += [para, ""]
    if doc.table:
        head, *rows = doc.table
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def render_html(doc: Content) -> bytes:
    from html import escape

    parts = [f"<html><head><title>{escape(doc.title)}</title></head><body>"]
    parts.append(f"<h1>{escape(doc.title)}</h1>")
    for sec in doc.sections:
        parts.append(f"<h2>{escape(sec.heading)}</h2>")
        parts += [f"<p>{escape(p)}</p>" for p in sec.paragraphs]
    if doc.table:
        head, *rows = doc.table
        parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts).encode()


def render_docx(doc: Content) -> bytes:
    import docx

    document = docx.Document()
    props = document.core_properties
    import datetime as dt

    props.created = props.modified = dt.datetime(*FIXED_DATE)
    props.author = props.last_modified_by = "dagster-hpc corpus"
    document.add_heading(doc.title, level=1)
    for sec in doc.sections:
        document.add_heading(sec.heading, level=2)
        for para in sec.paragraphs:
            document.add_paragraph(para)
    if doc.table:
        table = document.add_table(rows=len(doc.table), cols=len(doc.table[0]))
        for r, row in enumerate(doc.table):
            for c, cell in enumerate(row):
                table.cell(r, c).text = cell
    buf = io.BytesIO()
    document.save(buf)
    return _fixed_zip_times(buf.getvalue())


def _fixed_zip_times(data: bytes) -> bytes:
    """python-docx stamps zip members with the current time: rewrite them with FIXED_DATE."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def render_pdf(doc: Content) -> bytes:
    import datetime as dt

    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(dt.datetime(*FIXED_DATE, tzinfo=dt.UTC))
    pdf.set_title(doc.title)
    for i, sec in enumerate(doc.sections):
        pdf.add_page()  # one section per page: multi-page PDFs
        if i == 0:
            pdf.set_font("helvetica", "B", 18)
            pdf.multi_cell(0, 10, doc.title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "B", 14)
        pdf.multi_cell(0, 9, sec.heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        for para in sec.paragraphs:
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    return bytes(pdf.output())


RENDERERS = {"md": render_markdown, "html": render_html, "docx": render_docx, "pdf": render_pdf}


def file_name(index: int) -> str:
    return f"doc-{index:04d}.{FORMATS[index % len(FORMATS)]}"


def write_document(root: Path, index: int, version: int = 1, seed: int = 0, name: str = "") -> Path:
    fmt = FORMATS[index % len(FORMATS)]
    path = Path(root) / (name or file_name(index))
    path.write_bytes(RENDERERS[fmt](content(index, version, seed)))
    return path


def write_broken(root: Path) -> Path:
    """A file named .pdf that is no PDF (a truncated scan upload): Docling reports FAILURE."""
    path = Path(root) / BROKEN_NAME
    path.write_bytes(b"%PDF-1.7\n% truncated upload: no objects, no xref\n")
    return path


def repair_broken(root: Path, seed: int = 0) -> Path:
    """Replace the broken file by a valid PDF of the same name (the user re-uploaded it)."""
    path = Path(root) / BROKEN_NAME
    path.write_bytes(render_pdf(content(9999, 1, seed)))
    return path


def generate(root: str | Path, docs: int, seed: int = 0, broken: bool = True) -> list[Path]:
    """Write ``docs`` documents (formats cycling md, html, docx, pdf) and, with ``broken``, the
    file Docling cannot convert. Returns the paths written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = [write_document(root, i, seed=seed) for i in range(docs)]
    if broken:
        paths.append(write_broken(root))
    return paths


@dataclass(frozen=True)
class Round2:
    """What round 2 of the example changes (file names relative to the corpus root)."""

    edited: str
    added: str
    deleted: str
    touched: str
    renamed: tuple[str, str]
    repaired: str | None


def apply_round_2(root: str | Path, docs: int, seed: int = 0, repair: bool = True) -> Round2:
    """One document edited, one added, one deleted, one only touched (mtime), one renamed;
    the broken one repaired (re-uploaded as a valid PDF) unless ``repair=False``."""
    root = Path(root)
    if docs < 5:
        raise ValueError(f"round 2 changes 5 different documents; the corpus has {docs}")
    write_document(root, 1, version=2, seed=seed)
    added = write_document(root, docs, seed=seed)
    (root / file_name(2)).unlink()
    touched = root / file_name(3)
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    old = root / file_name(4)
    new = root / f"renamed-{file_name(4)}"
    old.rename(new)
    repaired = repair_broken(root, seed).name if repair else None
    return Round2(
        file_name(1), added.name, file_name(2), touched.name, (old.name, new.name), repaired
    )


def edit_documents(
    root: str | Path, indexes: Iterator[int] | list[int], seed: int = 0
) -> list[Path]:
    """Version 2 of each given document (the benchmark's 10% change)."""
    return [write_document(Path(root), i, version=2, seed=seed) for i in indexes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true")
    args = parser.parse_args(argv)
    paths = generate(args.root, args.docs, args.seed, broken=not args.no_broken)
    print(f"{len(paths)} files in {args.root}")


if __name__ == "__main__":
    main()
