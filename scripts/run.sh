#!/usr/bin/env bash
# The main job, from a fresh clone: setup (idempotent), then the experiment.
# The owl pipeline (scripts/owl.ts) is not built yet; until it is, this runs the paper's MNIST
# auxiliary-logit experiment (scripts/mnist.ts), the part of the paper that runs end to end today.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
if [ -f scripts/owl.ts ]; then
  exec npx tsx scripts/owl.ts "$@"
else
  exec npx tsx scripts/mnist.ts "$@"
fi
