#!/usr/bin/env bash
# The main job, from a fresh clone: setup (idempotent), then the subliminal-learning experiment
# (scripts/owl.ts) on the embedded tiny models. Arguments are passed to scripts/owl.ts (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec npx tsx scripts/owl.ts "$@"
