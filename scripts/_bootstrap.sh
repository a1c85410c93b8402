# shellcheck shell=bash
# Sourced by scripts/run-*: make sure uv exists and the locked environment is installed.
UV_VERSION=0.13.8
if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv $UV_VERSION with pip" >&2
  python3 -m pip install --quiet --user "uv==$UV_VERSION" || python3 -m pip install --quiet "uv==$UV_VERSION"
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --quiet
