#!/usr/bin/env bash
# Sandboxed builds, drover next to Nix 2.8 in the same run: scripts/bench-build.sh with
# SANDBOX=1 (wide graphs of N = 1000 by default; sandboxed timings on a disk drift badly from
# run to run, so both run on a tmpfs), whose ratio has the target <= 0.33; then what the
# sandbox alone costs drover per build (benches/sandbox.rs: trivial builders through one
# supervisor, sandboxed and not, on a tmpfs).
# Usage: scripts/bench-sandbox.sh [N...]   (env: SHAPES="wide", JOBS=8, RUNS=1, SETUP_N=300)
# Needs root (to mount the tmpfs), nix-bin, busybox-static, python3 and a kernel that allows
# user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 1000
SANDBOX=1 SHAPES=${SHAPES:-wide} scripts/bench-build.sh "$@"

cargo build --release --quiet --bench sandbox
setup_bench=$(ls -t target/release/deps/sandbox-* | grep -v '\.d$' | head -1)
fs=$(mktemp -d /tmp/drover-bench-sandbox.XXXXXX)
mount -t tmpfs -o size=1g,mode=755 tmpfs "$fs"
trap 'cd /; umount "$fs" 2>/dev/null || true; rm -rf "$fs"' EXIT
echo "drover's sandbox alone, one build after the other ($(cut -d' ' -f1-3 /proc/loadavg)):"
N=${SETUP_N:-300} TMPDIR=$fs "$setup_bench"
