#!/usr/bin/env bash
# Bench-only setup for the PyTorch CPU baseline of `npm run bench -- --only students`
# (bench/torch_tiny_cpu.py): Debian's torch with OpenBLAS as its BLAS. Never run by the tests; the
# students benchmark skips the baseline (and says so) when torch is missing.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 && dpkg -s libopenblas0-openmp >/dev/null 2>&1; then exit 0; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch libopenblas0-openmp >&2
