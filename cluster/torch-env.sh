#!/usr/bin/env bash
# cluster/torch-env.sh CONFDIR -- CONFDIR/envs/torch: torch (CPU wheel) + dagster-pipes for the
# real 2-node TorchrunLauncher test (tests/integration/test_launchers_slurm.py); see test-venv.sh.
# Env: TEST_USER=hpcuser TORCH_VERSION DAGSTER_PIPES_VERSION
set -euo pipefail
exec bash "$(dirname "$0")/test-venv.sh" "${1:?usage: torch-env.sh CONFDIR}" torch "torch==${TORCH_VERSION:-2.13.0}" torchrun torch
