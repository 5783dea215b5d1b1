#!/usr/bin/env bash
# Times `drover hash-path --type sha256 TREE` against `nix-hash --type sha256 TREE` on a
# ~1 GiB tree of mixed small and large files (release build; the page cache is warmed by an
# untimed run of each first). Prints the median of each and the ratio drover / Nix (and
# the ratio of the best runs, which other load on the machine disturbs less).
#
#   scripts/bench-nar.sh [REPETITIONS]      (default 5; tree in $BENCH_DIR, default /tmp/drover-bench-nar)
set -euo pipefail

reps=${1:-5}
dir=${BENCH_DIR:-/tmp/drover-bench-nar}
tree=$dir/tree
root=$(cd "$(dirname "$0")/.." && pwd)

command -v nix-hash >/dev/null || { echo "nix-hash not found (apt-get install -y nix-bin)" >&2; exit 1; }

if [ ! -e "$tree/.complete" ]; then
    echo "building the tree in $tree ..." >&2
    rm -rf "$tree"
    mkdir -p "$tree"
    python3 - "$tree" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(1)
def write(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 22)
            f.write(rng.randbytes(n))
            left -= n
# 4 x 128 MiB, 64 x 2 MiB, 200 directories x 100 files of 1 B - 32 KiB (~320 MiB),
# plus some empty files, symlinks and executables.
big = os.path.join(root, "big"); os.mkdir(big)
for i in range(4):
    write(os.path.join(big, f"blob{i}"), 128 << 20)
mid = os.path.join(root, "mid"); os.mkdir(mid)
for i in range(64):
    write(os.path.join(mid, f"m{i:02}"), 2 << 20)
for d in range(200):
    sub = os.path.join(root, "small", f"d{d:03}", "share")
    os.makedirs(sub)
    for i in range(100):
        p = os.path.join(sub, f"f{i:03}.dat")
        write(p, rng.randint(1, 32 << 10))
        if i % 10 == 0:
            os.chmod(p, 0o755)
    open(os.path.join(sub, "empty"), "wb").close()
    os.symlink(f"../../d{(d + 1) % 200:03}/share/f000.dat", os.path.join(sub, "link"))
EOF
    touch "$tree/.complete"
fi
du -sh --apparent-size "$tree" >&2

(cd "$root" && cargo build --release --quiet)
drover=$root/target/release/drover

# Warm the page cache and check that both agree.
a=$("$drover" hash-path --type sha256 "$tree")
b=$(nix-hash --type sha256 "$tree")
[ "$a" = "$b" ] || { echo "MISMATCH: drover $a, nix-hash $b" >&2; exit 1; }

time_once() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

median() { sort -n | awk '{a[NR]=$1} END {printf "%.3f", (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

d_times=() n_times=()
for _ in $(seq "$reps"); do
    d_times+=("$(time_once "$drover" hash-path --type sha256 "$tree")")
    n_times+=("$(time_once nix-hash --type sha256 "$tree")")
done
d=$(printf '%s\n' "${d_times[@]}" | median)
n=$(printf '%s\n' "${n_times[@]}" | median)
dmin=$(printf '%s\n' "${d_times[@]}" | sort -n | head -1)
nmin=$(printf '%s\n' "${n_times[@]}" | sort -n | head -1)
echo "drover hash-path: median ${d}s  (runs: ${d_times[*]})"
echo "nix-hash:         median ${n}s  (runs: ${n_times[*]})"
echo "ratio drover/nix: median $(echo "$d / $n" | bc -l | cut -c1-5), best run $(echo "$dmin / $nmin" | bc -l | cut -c1-5)"
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg) (on $(nproc) CPUs; other load skews the figures)"
