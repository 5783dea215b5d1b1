#!/usr/bin/env bash
# Real builds, drover next to Nix 2.8 in the same run: trivial derivations from
# scripts/gen_dag.py (wide and random, N = 100, 1000, 3000 by default), unsandboxed, -j 8,
# each engine in a fresh store on a tmpfs with its build directories there too. Both build
# the same .drv files (instantiated by nix-instantiate into each fresh store: same store dir,
# same paths). Prints the wall time of `nix-store --realise` and of `drover build`, their
# ratio and the milliseconds per derivation, and the load average before each pair.
# With SANDBOX=1 both engines build sandboxed (`sandbox = true`, `/bin/sh` and `/bin/busybox`
# bound from the host; a fallback to unsandboxed builds counts as a failure).
# Usage: scripts/bench-build.sh [N...]   (env: SHAPES="wide random", JOBS=8, RUNS=1, SANDBOX=0)
# Needs root (to mount the tmpfs), nix-bin, busybox-static and python3 (and, sandboxed, a
# kernel that allows user namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 3000)
shapes=(${SHAPES:-wide random})
jobs=${JOBS:-8}
runs=${RUNS:-1}
if [ "${SANDBOX:-0}" = 1 ]; then
    sandbox=(--option sandbox true --option sandbox-paths "/bin/sh=/bin/busybox /bin/busybox")
else
    sandbox=(--option sandbox false)
fi

cargo build --release --quiet
drover=$PWD/target/release/drover
work=$(mktemp -d /tmp/drover-bench-build.XXXXXX)
fs=$work/fs
mkdir -p "$fs"
mount -t tmpfs -o size=8g,mode=755 tmpfs "$fs"
trap 'cd /; umount "$fs" 2>/dev/null || true; rm -rf "$work"' EXIT
uri="local?store=$fs/store&state=$fs/state&log=$fs/log"

# Runs one engine on a workload in a fresh store; prints the wall seconds.
run() {
    local engine=$1 nix=$2
    rm -rf "${fs:?}"/*
    mkdir -p "$fs/tmp" "$fs/conf"
    local drv
    drv=$(nix-instantiate --store "$uri" "$nix" 2>/dev/null)
    sync
    local start end rc=0
    start=$(date +%s.%N)
    if [ "$engine" = nix ]; then
        TMPDIR=$fs/tmp nix-store --store "$uri" --realise "$drv" -j "$jobs" \
            --option substituters '' --option build-users-group '' "${sandbox[@]}" \
            >/dev/null 2>"$work/$engine.err" || rc=$?
    else
        TMPDIR=$fs/tmp XDG_CONFIG_HOME=$fs/conf NIX_CONF_DIR=$fs/conf \
            "$drover" build --store "$uri" "$drv" -j "$jobs" --no-out-link "${sandbox[@]}" \
            >/dev/null 2>"$work/$engine.err" || rc=$?
    fi
    end=$(date +%s.%N)
    if [ "$rc" != 0 ] || grep -q "sandbox is not available" "$work/$engine.err"; then
        echo "$engine failed (exit status $rc) or fell back:" >&2
        tail -5 "$work/$engine.err" >&2
        exit 1
    fi
    echo "$end - $start" | bc -l
}

printf '%-8s %6s %6s %10s %10s %7s %12s %12s  %s\n' \
    shape N drvs nix_s drover_s ratio nix_ms/drv drover_ms/drv load
for n in "${sizes[@]}"; do
    for shape in "${shapes[@]}"; do
        nix="$work/$shape-$n.nix"
        python3 scripts/gen_dag.py --shape "$shape" -n "$n" --seed 1 -o "$nix" 2>/dev/null
        drvs=$((n + 1))
        for _ in $(seq "$runs"); do
            load=$(cut -d' ' -f1-3 /proc/loadavg)
            t_nix=$(run nix "$nix")
            t_drover=$(run drover "$nix")
            printf '%-8s %6d %6d %10.3f %10.3f %7.3f %12.2f %12.2f  %s\n' "$shape" "$n" "$drvs" \
                "$t_nix" "$t_drover" "$(echo "$t_drover / $t_nix" | bc -l)" \
                "$(echo "$t_nix * 1000 / $drvs" | bc -l)" \
                "$(echo "$t_drover * 1000 / $drvs" | bc -l)" "$load"
        done
    done
done
