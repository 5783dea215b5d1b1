#!/usr/bin/env bash
# Scheduling benchmark: random DAGs (average fan-in 3) built with -j 16 on the simulator.
#   1. the engine alone (scheduler + simulator, events consumed but not printed):
#      wall and CPU time, peak live heap per goal (counting allocator), peak RSS;
#   2. `drover simulate` end to end, plain and JSON output to /dev/null.
# Usage: scripts/bench-sim.sh [node counts...]   (default: 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

cargo build --release --quiet
cargo bench --bench sim --no-run --quiet 2>/dev/null
bench=$(ls -t target/release/deps/sim-* | grep -v '\.d$' | head -1)

echo "== engine (scheduler + simulator)"
"$bench" "${sizes[@]}"

echo "== drover simulate (output to /dev/null)"
for n in "${sizes[@]}"; do
    for format in plain json; do
        /usr/bin/time -f "$n nodes, $format: %e s wall, %U s user, %S s sys, max RSS %M KB" \
            target/release/drover simulate --nodes "$n" --jobs 16 --log-format "$format" \
            >/dev/null || true
    done
done
