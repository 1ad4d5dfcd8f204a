#!/bin/sh
# What the persistent pipeline cache saves where the driver keeps compiled code in it: RADV's
# null hardware (RADV_FORCE_FAMILY=navi21: AMD's compiler, no GPU), Mesa's own shader cache off.
# `ssmax pipelines` builds every pipeline the planner can choose (the full grid: head dims 64, 80,
# 96, 128, 256, f32 and f16; 80 pipelines) through the device's pipeline cache (vk_pipeline.c).
#   cold: an empty cache directory each run (no .pcache file)
#   warm: a cache directory with the .pcache file of an earlier run
# 5 runs each, interleaved. Each cell: "wall/cpu" seconds (cpu: user + system, all threads).
# Then, on stderr: the .pcache file, and how many shaders RADV compiled in one cold and one warm
# run (RADV_DEBUG=shaderstats prints one "*** SHADER STATS ***" block per compiled shader).
# usage: measure-radv.sh SSMAX > times-radv.tsv
set -eu
ssmax=$1
tmp=$(mktemp -d)
export RADV_FORCE_FAMILY=navi21 MESA_SHADER_CACHE_DISABLE=true
dev=$("$ssmax" devices | awk '/Null hardware \(RADV NAVI21\)/ { print $1; exit }' | tr -d '*')
[ -n "$dev" ] || { echo "no RADV null hardware device" >&2; exit 1; }
run() { # cachedir
    SSMAX_CACHE_DIR="$1" /usr/bin/time -f '%e %U %S' -o "$tmp/t" \
        "$ssmax" pipelines --device "$dev" --json "$tmp/p.json" >/dev/null
    awk '{ printf "%s/%.2f", $1, $2 + $3 }' "$tmp/t"
}
run "$tmp/warm" >/dev/null
cp "$tmp/p.json" "$tmp/first.json"
printf 'rep\tcold\twarm\n'
for rep in 1 2 3 4 5; do
    rm -rf "$tmp/cold"
    c=$(run "$tmp/cold")
    w=$(run "$tmp/warm")
    cmp -s "$tmp/p.json" "$tmp/first.json" || echo "warm run: statistics differ" >&2
    printf '%s\t%s\t%s\n' "$rep" "$c" "$w"
done
ls -l "$tmp/warm" >&2
rm -rf "$tmp/cold"
for c in cold warm; do
    n=$(SSMAX_CACHE_DIR="$tmp/$c" RADV_DEBUG=shaderstats "$ssmax" pipelines --device "$dev" 2>&1 |
        grep -c 'SHADER STATS' || true)
    echo "$c: $n shaders compiled" >&2
done
rm -rf "$tmp"
