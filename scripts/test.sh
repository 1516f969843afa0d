#!/usr/bin/env bash
# The whole test suite, from a fresh clone: setup (idempotent), typecheck, then vitest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SETUP_TESTS=1
source scripts/setup.sh
npx tsc --noEmit
npx vitest run "$@"
