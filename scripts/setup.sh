#!/usr/bin/env bash
# Idempotent setup, sourced or run by the README's two commands:
#  1. npm install (onnxruntime-node's installer downloads binaries, so it is told to skip);
#  2. if Node's `webgpu` package cannot create an adapter, install Mesa's lavapipe (CPU Vulkan)
#     from bookworm-backports — bookworm's own Mesa 22 is rejected by Dawn.
#  3. XDG_RUNTIME_DIR set to a writable folder when unset (the Vulkan loader wants one).
# SETUP_TESTS=1 (scripts/test.sh) also installs what the tests need: Debian's chromium-headless-shell and,
# as root, slurmctld/slurmd/munge for the single-node Slurm test.
# Optional: SETUP_FASHION_MNIST=1 also installs Debian's dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "setup: $*" >&2; }

if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/xdg-runtime-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

export ONNXRUNTIME_NODE_INSTALL=skip
stamp=node_modules/.setup-stamp
if [ -L node_modules ]; then
  # A worktree sharing another checkout's packages: `npm ci` would empty that checkout's node_modules.
  log "node_modules is a link to $(readlink node_modules) (another checkout's packages): not reinstalling"
elif [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  log "installing npm packages"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
  touch "$stamp"
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_update() { if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi; }

# Adds bookworm-backports by copying the machine's existing Debian source entry and changing only
# its suite name (no registry host is written by this script).
add_backports() {
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then return; fi
  local deb822=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -Eq '^Suites:.*\bbookworm\b' "$f"; then deb822="$f"; break; fi
  done
  if [ -n "$deb822" ]; then
    # First stanza whose Suites has plain "bookworm"; Suites replaced, every other field kept.
    awk 'BEGIN{RS=""; ORS="\n\n"} /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ && !done {
           n=split($0, L, "\n"); out="";
           for(i=1;i<=n;i++){ if (L[i] ~ /^Suites:/) L[i]="Suites: bookworm-backports"; out=out L[i] "\n" }
           printf "%s", out; done=1 }' "$deb822" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  else
    local line
    line=$(grep -hE '^deb\s.*\sbookworm\s' /etc/apt/sources.list 2>/dev/null | head -n1 || true)
    if [ -z "$line" ]; then
      log "cannot find a Debian bookworm source entry to copy for bookworm-backports"; return 1
    fi
    echo "$line" | sed -E 's/\sbookworm\s/ bookworm-backports /' | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  apt_updated=0
}

if ! node scripts/check-webgpu.mjs >/dev/null 2>&1; then
  log "no WebGPU adapter: installing Mesa lavapipe (mesa-vulkan-drivers) from bookworm-backports"
  add_backports
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >&2
  if ! node scripts/check-webgpu.mjs >&2; then
    log "still no WebGPU adapter after installing lavapipe"; exit 1
  fi
fi

# The test suite renders the report's charts (and, later, pages) in Debian's headless Chromium.
if [ "${SETUP_TESTS:-0}" = 1 ] && ! command -v chromium-headless-shell >/dev/null 2>&1; then
  log "installing chromium-headless-shell (the tests render charts in a real browser)"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium-headless-shell >&2
fi

# The grid's Slurm test runs a single-node cluster (slurmctld + slurmd + munge, started by the test as
# root). Where it cannot be installed, that test says so and is skipped; the rest of the suite runs.
if [ "${SETUP_TESTS:-0}" = 1 ] && [ "$(id -u)" = 0 ] && ! { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null 2>&1; then
  log "installing slurmctld, slurmd, slurm-client and munge (the grid's Slurm test)"
  if ! { apt_update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2; }; then
    log "could not install Slurm; its test will be skipped"
  fi
fi

if [ "${SETUP_FASHION_MNIST:-0}" = 1 ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  log "installing dataset-fashion-mnist"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >&2
fi
