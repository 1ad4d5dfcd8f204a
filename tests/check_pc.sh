#!/bin/sh
# What the installed files promise a packager. usage: check_pc.sh SSMAX_PC HEADER [LIBSSMAX_SO]
#  - ssmax.pc requires no vulkan or OpenCL package (the library opens both loaders with dlopen),
#    and its Cflags.private carry -DSSMAX_STATIC (a static link's SSMAX_API); pkg-config --static
#    gives both, where pkg-config is installed.
#  - libssmax.so needs neither loader and exports only what the header declares (the test hooks,
#    ssmax_fault_set among them, stay inside), where readelf and nm are installed.
set -u
pc=$1 header=$2 so=${3:-}
fail=0
bad() { echo "FAIL $*"; fail=1; }
ok() { echo "ok   $*"; }

[ -f "$pc" ] || { echo "FAIL $pc: no such file"; exit 1; }
if grep -Ei '^Requires(\.private)?:.*(vulkan|opencl)' "$pc"; then
    bad "$pc: Requires names a Vulkan or OpenCL package, but the library links neither loader"
else
    ok "$pc: no Requires on vulkan or OpenCL"
fi
if grep -Eq '^Cflags\.private:.*-DSSMAX_STATIC( |$)' "$pc"; then
    ok "$pc: Cflags.private has -DSSMAX_STATIC"
else
    bad "$pc: Cflags.private lacks -DSSMAX_STATIC (a static link would get the shared SSMAX_API)"
fi
if command -v pkg-config >/dev/null 2>&1; then
    dir=$(cd "$(dirname "$pc")" && pwd)
    out=$(PKG_CONFIG_PATH="$dir" PKG_CONFIG_LIBDIR="$dir" pkg-config --static --cflags --libs \
          "$dir/$(basename "$pc")" 2>&1)
    case "$out" in
    *-DSSMAX_STATIC*-lssmax*) ok "pkg-config --static: $out" ;;
    *) bad "pkg-config --static --cflags --libs: $out" ;;
    esac
    case "$out" in
    *-lvulkan* | *-lOpenCL*) bad "pkg-config --static links a loader: $out" ;;
    esac
    out=$(PKG_CONFIG_PATH="$dir" PKG_CONFIG_LIBDIR="$dir" pkg-config --cflags "$dir/$(basename "$pc")")
    case "$out" in
    *SSMAX_STATIC*) bad "pkg-config --cflags (shared) has -DSSMAX_STATIC: $out" ;;
    *) ok "pkg-config --cflags (shared): $out" ;;
    esac
else
    echo "skip pkg-config: not installed"
fi

if [ -n "$so" ]; then
    if command -v readelf >/dev/null 2>&1; then
        if readelf -d "$so" | grep -Ei 'NEEDED.*(vulkan|opencl)'; then
            bad "$so: linked against a loader"
        else
            ok "$so: needs neither libvulkan nor libOpenCL"
        fi
    else
        echo "skip readelf: not installed"
    fi
    if command -v nm >/dev/null 2>&1; then
        syms=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ { print $3 }')
        [ -n "$syms" ] || bad "$so: exports nothing"
        for s in $syms; do
            # the public headers: ssmax.h and the interop headers beside it
            grep -Eq "[ *]$s\(" "$(dirname "$header")"/ssmax*.h ||
                bad "$so exports $s, which no public header beside $header declares"
        done
        [ $fail -eq 0 ] && ok "$so: $(echo "$syms" | wc -l) exports, each declared in a public header"
    else
        echo "skip nm: not installed"
    fi
fi
exit $fail
