#!/bin/sh
# The first ssmax call of a new process on lavapipe, with Mesa's own shader cache off, before and
# after the Vulkan pipeline cache: wall time of `ssmax run` (process start to exit) and its CPU
# time (user + system, all threads: less sensitive to other load on the machine), 5 runs each, the
# configurations interleaved run by run. Each cell: "wall/cpu" in seconds.
#   before: main at 4bea9ff (no pipeline cache)
#   cold:   this branch, an empty cache directory each run (no .pcache file yet)
#   warm:   this branch, a cache directory with the .pcache file from an earlier run
#   mesa:   this branch, Mesa's shader cache on and warm (for comparison; the others disable it)
# usage: measure.sh BEFORE_SSMAX AFTER_SSMAX NPY_DIR > times.tsv
set -eu
before=$1 after=$2 npy=$3
tmp=$(mktemp -d)
warm=$tmp/warm mesa=$tmp/mesa
mkdir -p "$warm" "$mesa"
run() { # bin cachedir shape mesa_disable
    env MESA_SHADER_CACHE_DISABLE=$4 MESA_SHADER_CACHE_DIR="$tmp/mesa-shader" \
        SSMAX_CACHE_DIR="$2" /usr/bin/time -f '%e %U %S' -o "$tmp/t" \
        "$1" run --device vulkan:0 --quiet --q "$npy/$3-q.npy" --k "$npy/$3-k.npy" \
        --v "$npy/$3-v.npy" --out "$tmp/o.npy"
    awk '{ printf "%s/%.2f", $1, $2 + $3 }' "$tmp/t"
}
shapes="prefill-f32 prefill-f16 decode-f32 decode-f16"
for s in $shapes; do # the warm directory's file and Mesa's warm shader cache
    run "$after" "$warm" "$s" true >/dev/null
    run "$after" "$mesa" "$s" false >/dev/null
done
printf 'rep\tshape\tbefore\tcold\twarm\tmesa\n'
for rep in 1 2 3 4 5; do
    for s in $shapes; do
        rm -rf "$tmp/cold"
        b=$(run "$before" "$tmp/cold" "$s" true)
        rm -rf "$tmp/cold"
        c=$(run "$after" "$tmp/cold" "$s" true)
        w=$(run "$after" "$warm" "$s" true)
        m=$(run "$after" "$mesa" "$s" false)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$s" "$b" "$c" "$w" "$m"
    done
done
ls -l "$warm" >&2
rm -rf "$tmp"
