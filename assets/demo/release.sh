# The release: a manifest of everything that goes out, checked against the test reports.
. "$setup"

phase installPhase
mkdirs "$out/share/$pname"
{
    echo "$pname $version"
    for c in $components; do echo "component $c"; done
    for r in $reports; do echo "tested $(while IFS= read -r l; do echo "$l"; done < "$r")"; done
} > "$out/share/$pname/MANIFEST"
step=$(slice 100 "$(count $components)")
for c in $components; do
    echo "adding $c"
    pause "$step"
done
echo "release $pname-$version: $(count $components) components, $(count $reports) test reports"
