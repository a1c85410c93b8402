"""The README's newcomer path, in a new project directory: its install line, its two Quick start
blocks saved as it says, and its `dagster dev -m my_module` serving the UI. (The install line
used to install no webserver, so `dagster dev` failed.)"""

import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.unit.test_readme import README, _quick_start_blocks
from tests.unit.ui_support import dagster_dev, graphql

ROOT = README.parent
# uv resolves and installs Dagster into the new project (from uv's cache when warm)
INSTALL_TIMEOUT_S = 900


def _readme_install_command() -> list[str]:
    section = README.read_text().split("## Install it in your own project", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the install section should hold a bash block"
    line = block.group(1).strip().splitlines()[0].split("#", 1)[0]
    words = shlex.split(line.replace("/path/to/dagster-hpc", str(ROOT)))
    assert words[:2] == ["uv", "add"], words
    return words


def _uv() -> str:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(uv).exists(), "uv is needed (scripts/_bootstrap.sh installs it)"
    return uv


@pytest.mark.slow
def test_readme_quick_start_in_a_new_project_serves_the_ui(tmp_path: Path) -> None:
    project = tmp_path / "my-project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    uv = _uv()
    subprocess.run(
        [uv, "init", "--bare", "--name", "my-project", "-q"], cwd=project, env=env, check=True
    )
    install = _readme_install_command()
    subprocess.run([uv, *install[1:]], cwd=project, env=env, check=True, timeout=INSTALL_TIMEOUT_S)

    asset_code, payload_code = _quick_start_blocks()
    (project / "my_module.py").write_text(asset_code)
    (project / "payloads").mkdir()
    (project / "payloads" / "features.py").write_text(payload_code)

    command = [uv, "run", "dagster", "dev", "-m", "my_module"]  # as the README says
    with dagster_dev(
        command, cwd=project, env=env, log=tmp_path / "dagster-dev.log", expect_assets={"features"}
    ) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        versions = graphql(port, "{ version }")["data"]["version"]
        assert versions  # the webserver answers its API
