# Documentation: pages rendered from the sources, one step each.
. "$setup"

phase buildPhase
n=$(count $pages)
step=$(slice 85 "$n")
echo "generating documentation for $pname from $src"
for p in $pages; do
    echo "rendering $p.md -> html/$p.html"
    pause "$step"
done

phase installPhase
mkdirs "$out/share/doc/$pname/html"
for p in $pages; do
    echo "<html><title>$pname: $p</title></html>" > "$out/share/doc/$pname/html/$p.html"
done
echo "installed $n pages in $out/share/doc/$pname/html"
pause "$(slice 15 1)"
