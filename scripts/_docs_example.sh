#!/usr/bin/env bash
# The document pipeline's four rounds (examples/docs_pipeline) in its own environment
# (scripts/docs-env.sh: built once, then reused); run by scripts/run-example. Extra arguments go to
# `python -m docs_pipeline.rounds` (e.g. --docs 40).
# Slurm mode (DAGSTER_HPC_MODE=slurm) needs the same environment on the cluster: run
# scripts/docs-env.sh there and set DAGSTER_HPC_DOCS_CLUSTER_PYTHON to its bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=$(bash scripts/docs-env.sh)
if [ "${DAGSTER_HPC_MODE:-local}" = slurm ]; then
  if [ -z "${DAGSTER_HPC_DOCS_CLUSTER_PYTHON:-}" ]; then
    echo "run-example: the document pipeline in slurm mode needs its environment on the cluster:" \
      "run scripts/docs-env.sh there and set DAGSTER_HPC_DOCS_CLUSTER_PYTHON to its bin/python" >&2
    exit 1
  fi
  export DAGSTER_HPC_SLURM_PYTHON=$DAGSTER_HPC_DOCS_CLUSTER_PYTHON
fi
export PYTHONPATH="$PWD/src:$PWD/examples" HF_HUB_OFFLINE=1
exec "$env_dir/bin/python" -m docs_pipeline.rounds "$@"
