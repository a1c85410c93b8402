# shellcheck shell=bash
# Sourced by scripts/run-*: make sure uv exists and the locked environment is installed.
UV_VERSION=0.13.8
# pip --user puts uv in ~/.local/bin, which is often not on PATH: look there before installing
# it again (every command used to re-install uv then)
if ! command -v uv >/dev/null 2>&1 && [ -x "$HOME/.local/bin/uv" ]; then
  export PATH="$HOME/.local/bin:$PATH"
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv $UV_VERSION with pip" >&2
  python3 -m pip install --quiet --user "uv==$UV_VERSION" || python3 -m pip install --quiet "uv==$UV_VERSION"
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --quiet
