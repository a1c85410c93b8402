"""A deterministic document corpus for the pipeline: Markdown, HTML, DOCX, PDF, XLSX and PPTX
files (PDFs with a real text layer, so Docling's model-free native PDF pipeline reads them),
plus one file that makes Docling fail. Nothing is downloaded: the text comes from a seeded
generator.

Two sizes (``profile``):
- ``brief`` (the example's and the tests' default): a page or two each, ~50-100 ms of Docling
  per document; cheap enough for the four rounds in CI;
- ``report`` (the benchmark's): documents the size of real reports: PDFs of ~6-20 pages, DOCX
  and HTML of a similar length with tables and lists, workbooks of several sheets with
  hundreds of rows, decks of 10-25 slides (measured per format: docs/document-pipeline.md).

The same (index, version, seed, profile) always gives the same bytes (fixed timestamps inside
the zip-based formats and the PDF), so content hashes are stable across machines and runs.

    python -m docs_pipeline.corpus DIR --docs 200 --profile report   # needs fpdf2, python-docx,
                                                                    # openpyxl, python-pptx
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("md", "html", "docx", "pdf", "xlsx", "pptx")
PROFILES = ("brief", "report")
BROKEN_NAME = "broken-scan.pdf"
# A fixed instant for every timestamp inside generated files (reproducible bytes).
FIXED_DATE = (2026, 1, 1, 0, 0, 0)
_WORDS = (
    "sample provenance cluster allocation node queue batch field feature pipeline vector "
    "document conversion chunk embedding model weight storage shard actor driver partition "
    "result metric latency throughput memory scheduler account project budget energy hour "
    "research dataset table column record version change lineage graph asset check signal"
).split()
# More vocabulary for the report profile (real reports do not repeat sixty words).
_REPORT_WORDS = (
    "quarterly annual revenue operating expenditure forecast variance baseline objective "
    "milestone deliverable stakeholder governance compliance audit procurement contract "
    "infrastructure maintenance capacity utilisation efficiency reliability availability "
    "incident recovery backup archive retention migration upgrade deployment evaluation "
    "methodology experiment hypothesis sample survey respondent cohort region segment "
    "customer supplier partner programme initiative roadmap risk mitigation assessment "
    "benchmark performance regression accuracy precision recall calibration uncertainty"
).split()
_SITES = ("north", "south", "east", "west", "central", "harbour", "valley", "campus")


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...]
    bullets: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Content:
    """What a generated document says, independent of its file format."""

    title: str
    sections: tuple[Section, ...]
    table: tuple[tuple[str, ...], ...] = field(default=())
    # report profile: a workbook's data sheet (header + rows)
    data: tuple[tuple[str, ...], ...] = field(default=())


def content(
    index: int,
    version: int = 1,
    seed: int = 0,
    sections: int | None = None,
    profile: str = "brief",
) -> Content:
    """Document ``index`` in ``version``: a later version changes the last paragraph only, as a
    real edit would (earlier chunks keep their text)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: one of {PROFILES}")
    if profile == "report":
        return _report(index, version, seed, sections)
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


# The report profile's shape: sections per document, paragraphs per section, sentences per
# paragraph, and how often a section has a bullet list or a table (rows x columns).
REPORT_SECTIONS = (8, 20)
REPORT_PARAGRAPHS = (3, 6)
REPORT_SENTENCES = (4, 8)
REPORT_BULLETS_EVERY = 3  # one section in this many has a bullet list
REPORT_TABLE_EVERY = 2  # one section in this many has a table
REPORT_TABLE_ROWS = (6, 24)
REPORT_TABLE_COLS = (4, 6)
REPORT_DATA_ROWS = (150, 600)  # a workbook's data sheet
REPORT_DATA_COLS = 8


def _report(index: int, version: int, seed: int, sections: int | None) -> Content:
    rng = random.Random(f"report:{seed}:{index}")
    words = _WORDS + _REPORT_WORDS

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(9, 20))).capitalize() + "."

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.randint(*REPORT_SENTENCES)))

    def table() -> tuple[tuple[str, ...], ...]:
        cols = rng.randint(*REPORT_TABLE_COLS)
        head = ("item", *(f"{rng.choice(_REPORT_WORDS)} {c}" for c in range(1, cols)))
        rows = tuple(
            (
                f"{rng.choice(words)} {r + 1}",
                *(f"{rng.uniform(0, 5000):.1f}" for _ in range(cols - 1)),
            )
            for r in range(rng.randint(*REPORT_TABLE_ROWS))
        )
        return (head, *rows)

    n_sections = sections if sections is not None else rng.randint(*REPORT_SECTIONS)
    secs = []
    for s in range(n_sections):
        paragraphs = tuple(paragraph() for _ in range(rng.randint(*REPORT_PARAGRAPHS)))
        bullets = (
            tuple(sentence() for _ in range(rng.randint(3, 7)))
            if rng.randrange(REPORT_BULLETS_EVERY) == 0
            else ()
        )
        tab = table() if rng.randrange(REPORT_TABLE_EVERY) == 0 else ()
        heading = f"{s + 1}. {rng.choice(_REPORT_WORDS).capitalize()} {rng.choice(words)}"
        secs.append(Section(heading, paragraphs, bullets, tab))
    head = (
        "date",
        "site",
        *(f"{rng.choice(_REPORT_WORDS)}_{c}" for c in range(REPORT_DATA_COLS - 2)),
    )
    data = (head,) + tuple(
        (
            f"2026-{1 + r // 28 % 12:02d}-{1 + r % 28:02d}",
            rng.choice(_SITES),
            *(f"{rng.uniform(0, 1000):.2f}" for _ in range(REPORT_DATA_COLS - 2)),
        )
        for r in range(rng.randint(*REPORT_DATA_ROWS))
    )
    if version > 1:
        last = secs[-1]
        edit = f"Revision {version}: {paragraph()}"
        secs[-1] = Section(last.heading, (*last.paragraphs[:-1], edit), last.bullets, last.table)
        data = (*data[:-1], (*data[-1][:-1], f"{version}.00"))
    summary = (("metric", "value"),) + tuple(
        (rng.choice(_REPORT_WORDS), str(rng.randint(1, 99999))) for _ in range(rng.randint(4, 8))
    )
    title = f"Report {index:04d}: {rng.choice(_REPORT_WORDS)} {rng.choice(_REPORT_WORDS)} review"
    return Content(title, tuple(secs), summary, data)


def render_markdown(doc: Content) -> bytes:
    lines = [f"# {doc.title}", ""]
    for sec in doc.sections:
        lines += [f"## {sec.heading}", ""]
        for para in sec.paragraphs:
            lines += [para, ""]
        lines += [f"- {b}" for b in sec.bullets] + ([""] if sec.bullets else [])
        lines += _markdown_table(sec.table) + ([""] if sec.table else [])
    lines += _markdown_table(doc.table)
    return ("\n".join(lines) + "\n").encode()


def _markdown_table(table: tuple[tuple[str, ...], ...]) -> list[str]:
    if not table:
        return []
    head, *rows = table
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def render_html(doc: Content) -> bytes:
    from html import escape

    def table(rows_in: tuple[tuple[str, ...], ...]) -> list[str]:
        if not rows_in:
            return []
        head, *rows = rows_in
        out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        return [*out, "</table>"]

    parts = [f"<html><head><title>{escape(doc.title)}</title></head><body>"]
    parts.append(f"<h1>{escape(doc.title)}</h1>")
    for sec in doc.sections:
        parts.append(f"<h2>{escape(sec.heading)}</h2>")
        parts += [f"<p>{escape(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            parts += ["<ul>", *(f"<li>{escape(b)}</li>" for b in sec.bullets), "</ul>"]
        parts += table(sec.table)
    parts += table(doc.table)
    parts.append("</body></html>")
    return "\n".join(parts).encode()


def render_docx(doc: Content) -> bytes:
    import docx

    document = docx.Document()
    props = document.core_properties

    props.created = props.modified = dt.datetime(*FIXED_DATE)
    props.author = props.last_modified_by = "dagster-hpc corpus"
    document.add_heading(doc.title, level=1)

    def add_table(rows: tuple[tuple[str, ...], ...]) -> None:
        if not rows:
            return
        table = document.add_table(rows=len(rows), cols=len(rows[0]))
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                table.cell(r, c).text = cell

    for sec in doc.sections:
        document.add_heading(sec.heading, level=2)
        for para in sec.paragraphs:
            document.add_paragraph(para)
        for bullet in sec.bullets:
            document.add_paragraph(bullet, style="List Bullet")
        add_table(sec.table)
    add_table(doc.table)
    buf = io.BytesIO()
    document.save(buf)
    return _fixed_zip_times(buf.getvalue())


_CORE_PROPERTIES = "docProps/core.xml"
_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def _fixed_zip_times(data: bytes) -> bytes:
    """python-docx and python-pptx stamp zip members with the current time, openpyxl its
    ``modified`` property at save: rewrite both with FIXED_DATE."""
    stamp = dt.datetime(*FIXED_DATE).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            member = src.read(info.filename)
            if info.filename == _CORE_PROPERTIES:
                member = _MODIFIED.sub(rb"\g<1>" + stamp.encode() + rb"\g<2>", member)
            dst.writestr(fixed, member)
    return out.getvalue()


def render_pdf(doc: Content) -> bytes:

    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(dt.datetime(*FIXED_DATE, tzinfo=dt.UTC))
    pdf.set_title(doc.title)
    if doc.data:
        return _render_report_pdf(pdf, doc)
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


def _render_report_pdf(pdf: Any, doc: Content) -> bytes:
    """A report: text flowing over pages, bullet lists and tables inline."""
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 18)
    pdf.multi_cell(0, 10, doc.title, new_x="LMARGIN", new_y="NEXT")
    for sec in doc.sections:
        pdf.ln(3)
        pdf.set_font("helvetica", "B", 14)
        pdf.multi_cell(0, 8, sec.heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=10)
        for para in sec.paragraphs:
            pdf.multi_cell(0, 5, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        for bullet in sec.bullets:
            pdf.multi_cell(0, 5, f"- {bullet}", new_x="LMARGIN", new_y="NEXT")
        if sec.table:
            pdf.ln(2)
            pdf.set_font("helvetica", size=8)
            with pdf.table(text_align="LEFT") as table:
                for values in sec.table:
                    row = table.row()
                    for value in values:
                        row.cell(value)
            pdf.set_font("helvetica", size=10)
    return bytes(pdf.output())


def render_xlsx(doc: Content) -> bytes:
    """A workbook: a summary sheet (title, metrics, the text of the sections' first paragraphs),
    one sheet per table, and (report profile) a data sheet of hundreds of rows."""

    from openpyxl import Workbook

    book = Workbook()
    book.properties.created = book.properties.modified = dt.datetime(*FIXED_DATE)
    book.properties.creator = book.properties.lastModifiedBy = "dagster-hpc corpus"
    summary = book.active
    summary.title = "Summary"
    summary.append([doc.title])
    for row in doc.table:
        summary.append(list(row))
    summary.append([])
    for sec in doc.sections:
        summary.append([sec.heading, sec.paragraphs[-1]])
    for n, sec in enumerate(s for s in doc.sections if s.table):
        sheet = book.create_sheet(f"Table {n + 1}")
        for row in sec.table:
            sheet.append([_cell(v) for v in row])
    if doc.data:
        sheet = book.create_sheet("Data")
        for row in doc.data:
            sheet.append([_cell(v) for v in row])
    buf = io.BytesIO()
    book.save(buf)
    return _fixed_zip_times(buf.getvalue())


def _cell(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


# Slides: bullets on a content slide, rows of a table slide (more would overflow the slide).
SLIDE_BULLETS = 6
SLIDE_TABLE_ROWS = 12


def render_pptx(doc: Content) -> bytes:
    """A deck: a title slide, per section a slide with its points (and its table's first rows
    on a slide of their own)."""

    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    props = deck.core_properties
    props.created = props.modified = dt.datetime(*FIXED_DATE)
    props.author = props.last_modified_by = "dagster-hpc corpus"
    props.revision = 1
    title_slide = deck.slides.add_slide(deck.slide_layouts[0])
    title_slide.shapes.title.text = doc.title
    title_slide.placeholders[1].text = f"{len(doc.sections)} sections"
    for sec in doc.sections:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = sec.heading
        body = slide.placeholders[1].text_frame
        points = [*sec.paragraphs, *sec.bullets][:SLIDE_BULLETS]
        body.text = points[0]
        for point in points[1:]:
            body.add_paragraph().text = point
        if sec.table:
            rows = sec.table[: SLIDE_TABLE_ROWS + 1]
            slide = deck.slides.add_slide(deck.slide_layouts[5])
            slide.shapes.title.text = f"{sec.heading} (table)"
            shape = slide.shapes.add_table(
                len(rows), len(rows[0]), Inches(0.5), Inches(1.5), Inches(9), Inches(5)
            )
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
    buf = io.BytesIO()
    deck.save(buf)
    return _fixed_zip_times(buf.getvalue())


RENDERERS = {
    "md": render_markdown,
    "html": render_html,
    "docx": render_docx,
    "pdf": render_pdf,
    "xlsx": render_xlsx,
    "pptx": render_pptx,
}


def file_name(index: int) -> str:
    return f"doc-{index:04d}.{FORMATS[index % len(FORMATS)]}"


def write_document(
    root: Path,
    index: int,
    version: int = 1,
    seed: int = 0,
    name: str = "",
    profile: str = "brief",
) -> Path:
    fmt = FORMATS[index % len(FORMATS)]
    path = Path(root) / (name or file_name(index))
    path.write_bytes(RENDERERS[fmt](content(index, version, seed, profile=profile)))
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


def generate(
    root: str | Path, docs: int, seed: int = 0, broken: bool = True, profile: str = "brief"
) -> list[Path]:
    """Write ``docs`` documents (formats cycling through FORMATS) and, with ``broken``, the
    file Docling cannot convert. Returns the paths written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = [write_document(root, i, seed=seed, profile=profile) for i in range(docs)]
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
    root: str | Path, indexes: Iterator[int] | list[int], seed: int = 0, profile: str = "brief"
) -> list[Path]:
    """Version 2 of each given document (the benchmark's 10% change)."""
    return [write_document(Path(root), i, version=2, seed=seed, profile=profile) for i in indexes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true")
    parser.add_argument("--profile", choices=PROFILES, default="brief")
    args = parser.parse_args(argv)
    paths = generate(
        args.root, args.docs, args.seed, broken=not args.no_broken, profile=args.profile
    )
    print(f"{len(paths)} files in {args.root}")


if __name__ == "__main__":
    main()
