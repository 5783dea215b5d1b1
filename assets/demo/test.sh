# A test suite: each test of $tests passes after its share of the time. The test named by
# $flaky fails the first time it runs (a timing-sensitive test, as in real life) and passes
# when the suite is retried: `drover demo` marks its retry in $DEMO_STATE, a directory that
# outlives a build (bound into the sandbox read-only).
. "$setup"

phase checkPhase
n=$(count $tests)
step=$(slice 95 "$n")
echo "running $n tests of $pname against $subject"
i=0
failed=
for t in $tests; do
    i=$((i + 1))
    pause "$step"
    if [ "$t" = "${flaky:-}" ] && [ ! -e "$DEMO_STATE/$name.retry" ]; then
        printf '%2d/%d %-36s FAIL\n' "$i" "$n" "$t"
        echo "    assertion failed: response within 250 ms (took 312 ms)"
        echo "    at tests/$t.c:88"
        failed=$t
        continue
    fi
    printf '%2d/%d %-36s ok\n' "$i" "$n" "$t"
done
if [ -n "$failed" ]; then
    echo "test result: FAILED. $((n - 1)) passed; 1 failed ($failed)"
    exit 1
fi
echo "test result: ok. $n passed; 0 failed"

phase installPhase
echo "$pname: $n tests passed against $subject" > "$out"
pause "$(slice 5 1)"
