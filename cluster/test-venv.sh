#!/usr/bin/env bash
# cluster/test-venv.sh CONFDIR NAME PACKAGE==VERSION EXECUTABLE MODULE -- build (or keep)
# CONFDIR/envs/NAME -> NAME-<key>/, a venv of /usr/bin/python3 with PACKAGE and dagster-pipes for
# one heavy launcher test (ray-env.sh, torch-env.sh). Separate from the shared payload env and
# never part of the project's lock. Same pattern as payload-env.sh: idempotent, a new build goes
# into its own directory and the link is switched atomically; one builder at a time.
# Env: TEST_USER=hpcuser DAGSTER_PIPES_VERSION (default: read from ../uv.lock)
set -euo pipefail
D=${1:?usage: test-venv.sh CONFDIR NAME PACKAGE==VERSION EXECUTABLE MODULE}
NAME=${2:?name}; PIN=${3:?package pin}; EXE=${4:?executable}; MODULE=${5:?module}
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_USER=${TEST_USER:-hpcuser}
lock_version() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$HERE/../uv.lock" 2>/dev/null; }
DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-$(lock_version dagster-pipes)}; DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-1.13.27}
WANT="$PIN dagster-pipes==$DAGSTER_PIPES_VERSION"
KEY=$(printf '%s' "$WANT" | sha256sum | cut -c1-12)
LINK=$D/envs/$NAME; DIR=$D/envs/$NAME-$KEY

ok() { [ -x "$1/bin/$EXE" ] && [ "$(cat "$1/.pins" 2>/dev/null)" = "$WANT" ] && \
  runuser -u "$TEST_USER" -- "$1/bin/python" -c "import $MODULE, dagster_pipes" 2>/dev/null; }

exec 9> "$D/envs/.$NAME-env.lock"
flock 9
if ok "$LINK"; then echo "$NAME env present ($WANT)"; exit 0; fi
if ! ok "$DIR"; then
  rm -rf "$DIR"   # a venv embeds its path: build it where it will live
  /usr/bin/python3 -m venv "$DIR"
  # shellcheck disable=SC2086  # WANT is several words on purpose
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --retries 3 --timeout 60 $WANT \
    || { rm -rf "$DIR"; echo "$NAME-env: pip install $WANT failed (needs PyPI)" >&2; exit 1; }
  echo "$WANT" > "$DIR/.pins"; chmod -R a+rX "$DIR"
  ok "$DIR" || { echo "$NAME-env: $TEST_USER cannot import $MODULE/dagster_pipes from $DIR" >&2; exit 1; }
fi
[ -d "$LINK" ] && [ ! -L "$LINK" ] && rm -rf "$LINK"
ln -sfn "$NAME-$KEY" "$LINK.tmp.$$" && mv -T "$LINK.tmp.$$" "$LINK"
echo "$NAME env built: $LINK -> $NAME-$KEY ($WANT)"
