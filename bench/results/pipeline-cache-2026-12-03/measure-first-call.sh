#!/bin/sh
# A plan made ahead of time against the first ssmax_attn of a new process, on lavapipe, with
# Mesa's shader cache off and an empty SSMAX_CACHE_DIR every run (bench/first_call.c):
#   plan: ssmax_plan_create, then ssmax_plan_execute twice
#   attn: ssmax_attn twice (the first builds the pipelines)
#   mesa: as plan, with Mesa's shader cache on and warm (for comparison)
# f32, B1 Hq8 Hkv8 D64; decode Lq1 Lk1024, prefill Lq=Lk=256. 5 runs each, interleaved.
# Rows: rep, shape, config, step, wall ms, cpu ms (CLOCK_PROCESS_CPUTIME_ID: every thread).
# usage: measure-first-call.sh FIRST_CALL DEVICE > times-first-call.tsv
set -eu
fc=$1 dev=$2
tmp=$(mktemp -d)
run() { # config shape
    rm -rf "$tmp/cache"
    case $1 in
    mesa) env MESA_SHADER_CACHE_DISABLE=false MESA_SHADER_CACHE_DIR="$tmp/mesa" \
              SSMAX_CACHE_DIR="$tmp/cache" "$fc" "$dev" plan "$2" 2>/dev/null ;;
    *) env MESA_SHADER_CACHE_DISABLE=true SSMAX_CACHE_DIR="$tmp/cache" "$fc" "$dev" "$1" "$2" \
           2>/dev/null ;;
    esac | awk -v r="$rep" -v s="$2" -v c="$1" '{ printf "%s\t%s\t%s\t%s\n", r, s, c, $0 }'
}
rep=0
for s in decode prefill; do run mesa "$s" >/dev/null; done # Mesa's cache, warm
printf 'rep\tshape\tconfig\tstep\twall_ms\tcpu_ms\n'
for rep in 1 2 3 4 5; do
    for s in decode prefill; do
        run plan "$s"
        run attn "$s"
        run mesa "$s"
    done
done
rm -rf "$tmp"
