#!/usr/bin/env bash
# cluster/ray-env.sh CONFDIR -- build (or keep) CONFDIR/envs/ray -> ray-<key>/, a venv of
# /usr/bin/python3 with ray and dagster-pipes for the real multi-node RayLauncher test
# (tests/integration/test_launchers_slurm.py). Separate from the shared payload env (ray is large)
# and never part of the project's lock. Same pattern as payload-env.sh: idempotent, a new build
# goes into its own directory and the link is switched atomically. ~15 s from the local wheel cache.
# Env: TEST_USER=hpcuser RAY_VERSION DAGSTER_PIPES_VERSION (default: read from ../uv.lock)
set -euo pipefail
D=${1:?usage: ray-env.sh CONFDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_USER=${TEST_USER:-hpcuser}
RAY_VERSION=${RAY_VERSION:-2.60.0}
lock_version() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$HERE/../uv.lock" 2>/dev/null; }
DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-$(lock_version dagster-pipes)}; DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-1.13.27}
WANT="ray==$RAY_VERSION dagster-pipes==$DAGSTER_PIPES_VERSION"
KEY=$(printf '%s' "$WANT" | sha256sum | cut -c1-12)
LINK=$D/envs/ray; DIR=$D/envs/ray-$KEY

ok() { [ -x "$1/bin/ray" ] && [ "$(cat "$1/.pins" 2>/dev/null)" = "$WANT" ] && \
  runuser -u "$TEST_USER" -- "$1/bin/python" -c 'import ray, dagster_pipes' 2>/dev/null; }

# one builder at a time (parallel test sessions)
exec 9> "$D/envs/.ray-env.lock"
flock 9
if ok "$LINK"; then echo "ray env present ($WANT)"; exit 0; fi
if ! ok "$DIR"; then
  rm -rf "$DIR"   # a venv embeds its path: build it where it will live
  /usr/bin/python3 -m venv "$DIR"
  # shellcheck disable=SC2086  # WANT is several words on purpose
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --retries 3 --timeout 60 $WANT \
    || { rm -rf "$DIR"; echo "ray-env: pip install $WANT failed (needs PyPI)" >&2; exit 1; }
  echo "$WANT" > "$DIR/.pins"; chmod -R a+rX "$DIR"
  ok "$DIR" || { echo "ray-env: $TEST_USER cannot import ray/dagster_pipes from $DIR" >&2; exit 1; }
fi
[ -d "$LINK" ] && [ ! -L "$LINK" ] && rm -rf "$LINK"
ln -sfn "ray-$KEY" "$LINK.tmp.$$" && mv -T "$LINK.tmp.$$" "$LINK"
echo "ray env built: $LINK -> ray-$KEY ($WANT)"
