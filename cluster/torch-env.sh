#!/usr/bin/env bash
# cluster/torch-env.sh CONFDIR -- build (or keep) CONFDIR/envs/torch -> torch-<key>/, a venv of
# /usr/bin/python3 with torch (CPU wheel) and dagster-pipes for the real 2-node TorchrunLauncher
# test (tests/integration/test_launchers_slurm.py). Separate from the shared payload env (torch is
# large) and never part of the project lock. Same pattern as ray-env.sh: idempotent, built in its own
# directory, link switched atomically.
# Env: TEST_USER=hpcuser TORCH_VERSION DAGSTER_PIPES_VERSION (default: read from ../uv.lock)
set -euo pipefail
D=${1:?usage: torch-env.sh CONFDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_USER=${TEST_USER:-hpcuser}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
lock_version() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$HERE/../uv.lock" 2>/dev/null; }
DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-$(lock_version dagster-pipes)}; DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-1.13.27}
WANT="torch==$TORCH_VERSION dagster-pipes==$DAGSTER_PIPES_VERSION"
KEY=$(printf '%s' "$WANT" | sha256sum | cut -c1-12)
LINK=$D/envs/torch; DIR=$D/envs/torch-$KEY

ok() { [ -x "$1/bin/torchrun" ] && [ "$(cat "$1/.pins" 2>/dev/null)" = "$WANT" ] && \
  runuser -u "$TEST_USER" -- "$1/bin/python" -c 'import torch, dagster_pipes' 2>/dev/null; }

# one builder at a time (parallel test sessions)
exec 9> "$D/envs/.torch-env.lock"
flock 9
if ok "$LINK"; then echo "torch env present ($WANT)"; exit 0; fi
if ! ok "$DIR"; then
  rm -rf "$DIR"   # a venv embeds its path: build it where it will live
  /usr/bin/python3 -m venv "$DIR"
  # shellcheck disable=SC2086  # WANT is several words on purpose
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --retries 3 --timeout 60 $WANT \
    || { rm -rf "$DIR"; echo "torch-env: pip install $WANT failed (needs PyPI)" >&2; exit 1; }
  echo "$WANT" > "$DIR/.pins"; chmod -R a+rX "$DIR"
  ok "$DIR" || { echo "torch-env: $TEST_USER cannot import torch/dagster_pipes from $DIR" >&2; exit 1; }
fi
[ -d "$LINK" ] && [ ! -L "$LINK" ] && rm -rf "$LINK"
ln -sfn "torch-$KEY" "$LINK.tmp.$$" && mv -T "$LINK.tmp.$$" "$LINK"
echo "torch env built: $LINK -> torch-$KEY ($WANT)"
