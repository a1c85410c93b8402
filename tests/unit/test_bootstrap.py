"""scripts/_bootstrap.sh finds a uv that pip --user put in ~/.local/bin although that directory
is not on PATH (it used to re-install uv with pip on every command then)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool(path: Path, log: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >> "{log}"\n')
    path.chmod(0o755)


def test_bootstrap_uses_the_uv_in_local_bin_without_reinstalling(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    home = tmp_path / "home"
    _tool(home / ".local" / "bin" / "uv", log)
    _tool(tmp_path / "bin" / "python3", log)  # would be asked to `pip install uv`
    env = {"HOME": str(home), "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / '_bootstrap.sh'}"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    calls = log.read_text().splitlines()
    assert calls == ["uv sync --frozen --quiet"], calls  # no "python3 -m pip install ..."
