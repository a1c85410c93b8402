#!/usr/bin/env bash
# cluster/payload-env.sh CONFDIR -- build (or keep) the pre-deployed payload environment for jobs:
# CONFDIR/envs/payload -> payload-<key>/, a venv of /usr/bin/python3 with dagster-pipes (the
# version pinned in uv.lock) and polars, readable by every user. Called by up.sh (in the
# background while the daemons start). Idempotent: a present, working env with the same pins is
# kept. A new build goes into its own directory and the `payload` link is switched atomically,
# so jobs of other users that run from the old one are never pulled from under them.
# Env: TEST_USER=hpcuser DAGSTER_PIPES_VERSION / POLARS_VERSION (default: read from ../uv.lock)
set -euo pipefail
D=${1:?usage: payload-env.sh CONFDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_USER=${TEST_USER:-hpcuser}
lock_version() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$HERE/../uv.lock" 2>/dev/null; }
DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-$(lock_version dagster-pipes)}; DAGSTER_PIPES_VERSION=${DAGSTER_PIPES_VERSION:-1.13.27}
POLARS_VERSION=${POLARS_VERSION:-$(lock_version polars)}; POLARS_VERSION=${POLARS_VERSION:-2.1.0}
WANT="dagster-pipes==$DAGSTER_PIPES_VERSION polars==$POLARS_VERSION"
KEY=$(printf '%s' "$WANT" | sha256sum | cut -c1-12)
LINK=$D/envs/payload; DIR=$D/envs/payload-$KEY

ok() { [ -x "$1/bin/python" ] && [ "$(cat "$1/.pins" 2>/dev/null)" = "$WANT" ] && \
  runuser -u "$TEST_USER" -- "$1/bin/python" -c 'import dagster_pipes, polars' 2>/dev/null; }

if ok "$LINK"; then echo "payload env present ($WANT)"; exit 0; fi
install -d -m 0755 "$D/envs"
if ! ok "$DIR"; then
  rm -rf "$DIR"   # a venv embeds its path: build it where it will live
  /usr/bin/python3 -m venv "$DIR"
  # bounded retries/timeout: fail CI clearly instead of hanging when PyPI is unreachable
  # shellcheck disable=SC2086  # WANT is two words on purpose
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --retries 3 --timeout 60 $WANT \
    || { rm -rf "$DIR"; echo "payload-env: pip install $WANT failed (needs PyPI)" >&2; exit 1; }
  echo "$WANT" > "$DIR/.pins"; chmod -R a+rX "$DIR"
  ok "$DIR" || { echo "payload-env: $TEST_USER cannot import dagster_pipes/polars from $DIR" >&2; exit 1; }
fi
# a real directory from an older layout is replaced by the link (only when it is not usable)
[ -d "$LINK" ] && [ ! -L "$LINK" ] && rm -rf "$LINK"
ln -sfn "payload-$KEY" "$LINK.tmp.$$" && mv -T "$LINK.tmp.$$" "$LINK"
echo "payload env built: $LINK -> payload-$KEY ($WANT)"
