"""The Dagster UI in headless Chromium (Debian's chromium): a real dagster-webserver serving a
slurm-mode asset that ran on the test cluster; the asset page shows the `slurm` kind, the Slurm
metadata and the memory/CPU plot. A screenshot is written to a temp dir."""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest

from tests.integration.cdp import Browser
from tests.integration.slurm_support import CREATED_BASES, cleanup_remote_bases, slurm_env

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The webserver imports Dagster and loads the code location: seconds, more on a loaded machine.
WEBSERVER_READY_WITHIN_S = 180
# The asset page loads its GraphQL data and renders: seconds, more on a loaded machine.
PAGE_READY_WITHIN_S = 120
PLOT_SHOWN_WITHIN_S = 30
# Clicks the "[Show Markdown]" of the slurm/live_plot row (markdown metadata opens in a dialog).
SHOW_PLOT_JS = """(() => { for (const tr of document.querySelectorAll('tr')) {
  if (!tr.innerText.includes('slurm/live_plot')) continue;
  const a = [...tr.querySelectorAll('a')].find(x => x.innerText.includes('Show Markdown'));
  if (a) { a.click(); return true; } } return false; })()"""
PLOT_IMAGES_JS = """[...document.querySelectorAll('img')]
  .filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0)
  .map(i => [i.naturalWidth, i.naturalHeight, i.alt])"""
KIND_ICON_JS = "document.documentElement.innerHTML.includes('tool-slurm-color')"


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + WEBSERVER_READY_WITHIN_S
    while time.monotonic() < deadline:
        assert server.poll() is None, "dagster-webserver exited"
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster-webserver did not answer within {WEBSERVER_READY_WITHIN_S} s")


@pytest.mark.slow
def test_asset_page_shows_slurm_kind_metadata_and_plot(cluster, tmp_path, monkeypatch):
    assert CHROMIUM, "Debian's chromium is missing: scripts/run-tests installs it (apt)"
    asset = f"ui_{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    home.mkdir()
    env = {**slurm_env(cluster), "DAGSTER_HOME": str(home), "DAGSTER_HPC_UI_ASSET": asset}
    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_") or k == "DAGSTER_HOME":
            monkeypatch.setenv(k, v)
    sys.modules.pop("tests.integration.ui_defs", None)
    from tests.integration import ui_defs

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "webserver.log"
    with dg.DagsterInstance.get() as instance:  # its storage exists before the webserver opens it
        # the webserver imports Dagster and loads the code location while the job runs on Slurm
        with log.open("w") as fh:
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                 "-m", "tests.integration.ui_defs"],
                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            result = dg.materialize(
                [ui_defs.ui_asset], resources={"compute": ui_defs.COMPUTE}, instance=instance
            )
            assert result.success
            md = result.asset_materializations_for_node(asset)[0].metadata
            job_id = md["slurm/job_id"].value
            assert "slurm/live_plot" in md
            _wait_ready(base, server)
            shots = Path(tempfile.mkdtemp(prefix="dagster-hpc-ui-"))
            browser = Browser(CHROMIUM, tmp_path / "chromium-profile")  # a fresh --user-data-dir
            try:
                browser.navigate(f"{base}/assets/{asset}")
                browser.wait_for(
                    "document.body.innerText.includes('slurm/live_plot')", PAGE_READY_WITHIN_S
                )
                text = browser.evaluate("document.body.innerText")
                kind_icon = browser.evaluate(KIND_ICON_JS)
                assert browser.evaluate(SHOW_PLOT_JS), "no [Show Markdown] link on the plot's row"
                browser.wait_for(PLOT_IMAGES_JS + ".length > 0", PLOT_SHOWN_WITHIN_S)
                images = browser.evaluate(PLOT_IMAGES_JS)
                browser.screenshot(shots / "asset.png")
                print(f"screenshot: {shots / 'asset.png'}")
            finally:
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    assert (shots / "asset.png").stat().st_size > 10_000
    assert asset in text
    kinds = text.split("Kinds", 1)[1].split("Tags", 1)[0]
    assert "SLURM" in kinds.upper() and kind_icon  # the slurm kind, with Dagster's icon
    for key in ("slurm/job_id", "slurm/state", "slurm/node_hours", "slurm/cpu_efficiency_pct",
                "slurm/max_rss_mb", "slurm/live_peak_rss_mb"):  # fmt: skip
        assert key in text, key
    assert job_id in text and "COMPLETED" in text
    ((width, height, alt),) = images  # the memory/CPU plot, rendered as an image
    assert (width, height) == (512, 192) and job_id in alt
