# A source tarball: a fixed-output derivation. Its contents are given by the plan (the
# listing of the tarball), so the output hash the plan carries can be checked without a
# network; the transfer is shown as curl shows one.
. "$setup"

step=$(slice 100 6)
echo "trying $url"
echo "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current"
echo "                                 Dload  Upload   Total   Spent    Left  Speed"
for p in 0 9 27 48 71 93 100; do
    printf '%3d  %s    %3d  %s    0     0  1843k      0 --:--:-- --:--:-- --:--:-- 1845k\n' \
        "$p" "$size" "$p" "$size"
    [ "$p" = 100 ] || pause "$step"
done
printf '%s' "$contents" > "$out"
