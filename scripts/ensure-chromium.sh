#!/usr/bin/env bash
# Debian's chromium for the UI test (tests/integration/test_ui_chromium.py); idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-chromium: installing Debian's chromium (apt)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
