# A C project built the usual way: unpack, configure (autotools, or CMake when $cmake is
# set), compile $sources, optionally run the unit tests, install libraries, headers,
# programs and manual pages into the outputs ($out, and $dev, $bin and $man when the
# derivation has them), then fix up.
. "$setup"

dev=${dev:-$out}
man=${man:-$out}
bin=${bin:-$out}
cores=${NIX_BUILD_CORES:-1}
[ "$cores" -gt 0 ] || cores=1

phase unpackPhase
echo "unpacking source archive $src"
list "$src"
root=$(while IFS= read -r l; do echo "${l%%/*}"; break; done < "$src")
echo "source root is $root"
pause "$(slice 5 1)"

phase configurePhase
if [ -n "${cmake:-}" ]; then
    echo "cmake flags: -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$out -GNinja"
    echo "-- The C compiler identification is GNU 13.2.0"
    echo "-- Detecting C compiler ABI info - done"
    echo "-- Check for working C compiler: /usr/bin/cc - skipped"
    for dep in $deps; do
        name=${dep##*/}
        echo "-- Found ${name#*-}: $dep/lib"
    done
    echo "-- Configuring done (0.4s)"
    echo "-- Generating done (0.0s)"
    echo "-- Build files have been written to: $NIX_BUILD_TOP/$root/build"
else
    echo "configure flags: --prefix=$out --disable-static ${configureFlags:-}"
    for check in "for gcc... gcc" "whether the C compiler works... yes" \
        "for suffix of object files... o" "whether we are cross compiling... no" \
        "for stdint.h... yes" "for unistd.h... yes" "for pthread_create in -lpthread... yes"; do
        echo "checking $check"
    done
    for dep in $deps; do
        echo "checking for ${dep#*-}... yes ($dep)"
    done
    echo "config.status: creating Makefile"
    echo "config.status: creating config.h"
fi
pause "$(slice 15 1)"

phase buildPhase
n=$(count $sources)
step=$(slice 60 "$n")
echo "build flags: -j$cores -l$cores SHELL=/bin/sh"
i=0
for f in $sources; do
    i=$((i + 1))
    if [ -n "${cmake:-}" ]; then
        printf '[%d/%d] Building C object CMakeFiles/%s.dir/%s.o\n' "$i" "$((n + 1))" "$root" "$f"
    else
        printf '  CC       %s\n' "${f%.c}.lo"
    fi
    pause "$step"
done
for l in ${libs:-} ${bins:-}; do
    if [ -n "${cmake:-}" ]; then
        printf '[%d/%d] Linking C executable %s\n' "$((n + 1))" "$((n + 1))" "$l"
    else
        printf '  CCLD     %s\n' "$l"
    fi
done
if [ -n "${warning:-}" ]; then
    echo "$warning"
fi

if [ -n "${unitTests:-}" ]; then
    phase checkPhase
    step=$(slice 10 "$(count $unitTests)")
    for t in $unitTests; do
        pause "$step"
        echo "PASS: $t"
    done
fi

phase installPhase
mkdirs "$out/lib" "$dev/include" "$dev/lib/pkgconfig"
for l in ${libs:-}; do
    {
        echo "ELF shared object $l"
        for dep in $deps; do echo "RUNPATH $dep/lib"; done
    } > "$out/lib/$l"
    echo "installing $out/lib/$l"
done
for h in ${headers:-}; do
    case $h in */*) mkdirs "$dev/include/${h%/*}" ;; esac
    echo "/* $h: the public interface of $pname $version */" > "$dev/include/$h"
    echo "installing $dev/include/$h"
done
{
    echo "prefix=$out"
    echo "includedir=$dev/include"
    echo "Name: $pname"
    echo "Version: $version"
    echo "Libs: -L$out/lib"
} > "$dev/lib/pkgconfig/$pname.pc"
if [ -n "${bins:-}" ]; then
    mkdirs "$bin/bin"
    for b in $bins; do
        {
            echo "ELF executable $b"
            echo "RUNPATH $out/lib"
            for dep in $deps; do echo "RUNPATH $dep/lib"; done
        } > "$bin/bin/$b"
        echo "installing $bin/bin/$b"
    done
fi
for m in ${manPages:-}; do
    section=${m##*.}
    mkdirs "$man/share/man/man$section"
    echo ".TH ${m%.*} $section \"$version\"" > "$man/share/man/man$section/$m"
    echo "installing $man/share/man/man$section/$m"
done
pause "$(slice 10 1)"

phase fixupPhase
echo "shrinking RPATHs of ELF executables and libraries in $out"
echo "stripping (with command strip and flags -S -p) in $out/lib"
if [ "$dev" != "$out" ]; then
    echo "moving $out/lib/pkgconfig to $dev/lib/pkgconfig"
fi
echo "patching script interpreter paths in $out"
pause "$(slice 5 1)"
