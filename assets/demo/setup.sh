# The demo's little stdenv, sourced by every builder: phases reported to drover the way
# Nix's stdenv reports them, a clock scaled by $DEMO_SPEED, and the two tools a shell does
# not have built in (a sandboxed build sees nothing but /bin/sh and drover itself).
set -eu

# Announces a phase (drover shows it in the build slots; Nix's `@nix` setPhase line).
phase() {
    printf '@nix {"action":"setPhase","phase":"%s"}\n' "$1"
}

# Waits MILLISECONDS (at speed 1; `drover demo --speed X` divides them by X).
pause() {
    "$DEMO_TOOL" __demo-tool sleep "$1"
}

# Creates directories and their parents.
mkdirs() {
    "$DEMO_TOOL" __demo-tool mkdir "$@"
}

# The number of words in the arguments.
count() {
    echo $#
}

# A share (in per cent) of this build's time, spread over N steps: milliseconds per step.
slice() {
    steps=$2
    [ "$steps" -gt 0 ] || steps=1
    echo $(( buildTime * $1 / 100 / steps ))
}

# Prints the lines of a file, as `tar xvf` lists what it unpacks.
list() {
    while IFS= read -r line || [ -n "$line" ]; do
        echo "$line"
    done < "$1"
}
