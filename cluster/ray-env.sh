#!/usr/bin/env bash
# cluster/ray-env.sh CONFDIR -- CONFDIR/envs/ray: ray + dagster-pipes for the real multi-node
# RayLauncher test (tests/integration/test_launchers_slurm.py); see test-venv.sh.
# Env: TEST_USER=hpcuser RAY_VERSION DAGSTER_PIPES_VERSION
set -euo pipefail
exec bash "$(dirname "$0")/test-venv.sh" "${1:?usage: ray-env.sh CONFDIR}" ray "ray==${RAY_VERSION:-2.60.0}" ray ray
