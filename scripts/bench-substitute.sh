#!/usr/bin/env bash
# Substituting N small paths (N leaves and a root referring to all of them) from a local
# file:// binary cache written by `nix copy`, into a fresh chroot store: real Nix
# (`nix-store --store DIR -r ROOT --option substituters file://…`) against drover
# (`drover copy --from file://… --store DIR ROOT`), alternating, in the same run. Prints
# every run, the medians and the ratio drover / Nix (target: <= 0.5).
#
#   scripts/bench-substitute.sh [N] [COMPRESSION] [REPETITIONS]   (default 1000 none 3)
#   scratch in $BENCH_DIR (default /tmp/drover-bench-subst); the built workload is kept.
set -euo pipefail

n=${1:-1000}
comp=${2:-none}
reps=${3:-3}
dir=${BENCH_DIR:-/tmp/drover-bench-subst}
root_dir=$(cd "$(dirname "$0")/.." && pwd)

command -v nix-store >/dev/null || { echo "nix-store not found (apt-get install -y nix-bin)" >&2; exit 1; }
nixopts=(--option substituters '' --option build-users-group '' --option sandbox-paths /bin/busybox)
export XDG_CACHE_HOME=$dir/xdg-cache

mkdir -p "$dir"
src=$dir/src-$n
if [ ! -e "$src/.complete" ]; then
    echo "building $n leaves and a root with Nix in $src ..." >&2
    rm -rf "$src"
    mkdir -p "$src"
    cat >"$src/workload.nix" <<EOF
let
  sh = script: [ "sh" "-c" script ];
  drv = attrs: derivation ({ system = "x86_64-linux"; builder = "/bin/busybox"; } // attrs);
  leaf = i: drv { name = "bench-subst-leaf-\${toString i}"; args = sh "echo leaf \${toString i} > \$out"; };
  leaves = builtins.genList leaf $n;
in drv {
  name = "bench-subst-root-$n";
  args = sh "echo \${toString leaves} > \$out";
}
EOF
    nix-build "${nixopts[@]}" --store "$src/store" --no-out-link -j 8 "$src/workload.nix" >"$src/root" 2>"$src/build.log"
    touch "$src/.complete"
fi
root=$(tail -1 "$src/root")

cache=$dir/cache-$n-$comp
if [ ! -e "$cache/.complete" ]; then
    rm -rf "$cache"
    nix --extra-experimental-features nix-command "${nixopts[@]}" copy --store "$src/store" \
        --to "file://$cache?compression=$comp" "$root" 2>/dev/null
    touch "$cache/.complete"
fi
paths=$(nix-store "${nixopts[@]}" --store "$src/store" -qR "$root" | wc -l)

(cd "$root_dir" && cargo build --release --quiet)
drover=$root_dir/target/release/drover

now() { date +%s.%N; }
run_nix() {
    local t=$dir/target-nix
    rm -rf "$t"; sync
    local t0; t0=$(now)
    nix-store --store "$t" -r "$root" --option substituters "file://$cache" \
        --option require-sigs false --option build-users-group '' >/dev/null 2>"$dir/nix.err"
    local t1; t1=$(now)
    local got; got=$(nix-store --store "$t" "${nixopts[@]}" -qR "$root" | wc -l)
    [ "$got" = "$paths" ] || { echo "Nix made $got of $paths paths valid" >&2; cat "$dir/nix.err" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
run_drover() {
    local t=$dir/target-drover
    rm -rf "$t"; sync
    local t0; t0=$(now)
    "$drover" copy --from "file://$cache" --store "$t" --no-check-sigs "$root" 2>"$dir/drover.err"
    local t1; t1=$(now)
    local got; got=$("$drover" query --store "$t" -R "$root" | wc -l)
    [ "$got" = "$paths" ] || { echo "drover made $got of $paths paths valid" >&2; cat "$dir/drover.err" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "substituting $paths paths (compression $comp) from a file:// cache, $reps runs each"
nix_times=()
drover_times=()
for i in $(seq "$reps"); do
    if [ $((i % 2)) = 1 ]; then
        a=$(run_nix); b=$(run_drover)
    else
        b=$(run_drover); a=$(run_nix)
    fi
    nix_times+=("$a"); drover_times+=("$b")
    printf 'run %d: nix %ss  drover %ss\n' "$i" "$a" "$b"
done
nm=$(printf '%s\n' "${nix_times[@]}" | median)
dm=$(printf '%s\n' "${drover_times[@]}" | median)
printf 'median: nix %.3fs  drover %.3fs  drover/nix %.2f\n' "$nm" "$dm" "$(awk -v a="$dm" -v b="$nm" 'BEGIN { print a / b }')"
rm -rf "$dir/target-nix" "$dir/target-drover"
