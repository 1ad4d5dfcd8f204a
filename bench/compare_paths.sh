#!/bin/sh
# Path against path, shape by shape in one run, on each GPU-API device (default: vulkan opencl):
#   prefill suite: fused vs unfused;  decode suite: split-KV (auto split count) vs unsplit fused;
#   B1 H8 L1024 D64: --mode ssmax vs --mode softmax, three rounds alternating.
# Writes OUTDIR/paths.json (every record, plus "compare" and "round" fields) and prints ratios.
# usage: sh bench/compare_paths.sh [OUTDIR] [DEVICE...]
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/results/local}
[ $# -gt 0 ] && shift
devices=${*:-vulkan opencl}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
one() { # compare-name device args...
    name=$1 dev=$2
    shift 2
    n=$((n + 1))
    ./build/ssmax bench --device "$dev" "$@" --json "$tmp/$n.json" | tail -n +2
    /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); [x.update(compare=sys.argv[2]) for x in r]; json.dump(r, open(sys.argv[1], "w"))' "$tmp/$n.json" "$name"
}
shapes() { awk -v s="$1" '$1 == s { printf "%s,%s,%s,%s,%s,%s%s\n", $2, $3, $4, $5, $6, $7, $8 == 1 ? ",c" : "" }' bench/suites.txt; }
for dev in $devices; do
    for sh in $(shapes prefill); do
        c=""
        case $sh in *,c) c=--causal sh=${sh%,c} ;; esac
        one prefill "$dev" --shape "$sh" $c --path fused --iters 3 --warmup 1
        one prefill "$dev" --shape "$sh" $c --path unfused --iters 1 --warmup 0
    done
    for sh in $(shapes decode); do
        one decode "$dev" --shape "$sh" --path fused --iters 15 --warmup 2
        one decode "$dev" --shape "$sh" --path split-kv --iters 15 --warmup 2
    done
    for round in 1 2 3; do
        one mode "$dev" --shape 1,8,8,1024,1024,64 --mode ssmax --iters 5 --warmup 1
        one mode "$dev" --shape 1,8,8,1024,1024,64 --mode softmax --iters 5 --warmup 1
    done
done
/usr/bin/python3 - "$tmp" "$out/paths.json" <<'PY'
import glob, json, os, sys
recs = []
for f in sorted(glob.glob(sys.argv[1] + '/*.json'), key=lambda p: int(os.path.basename(p)[:-5])):
    recs += json.load(open(f))
json.dump(recs, open(sys.argv[2], 'w'), indent=1)
key = lambda r: (r['backend'], r['B'], r['Hq'], r['Hkv'], r['Lq'], r['Lk'], r['D'], r['causal'])
def shape(r):
    return 'B%d H%d/%d Lq%d Lk%d D%d%s' % (r['B'], r['Hq'], r['Hkv'], r['Lq'], r['Lk'], r['D'],
                                           ' causal' if r['causal'] else '')
for cmp, a, b in (('prefill', 'fused', 'unfused'), ('decode', 'split-kv', 'fused')):
    print('\n%s: %s vs %s (ms medians; ratio = %s time / %s time)' % (cmp, a, b, b, a))
    rows = {}
    for r in recs:
        if r['compare'] == cmp:
            rows.setdefault(key(r), {})[r['path']] = r
    for k, v in rows.items():
        ra, rb = v.get(a), v.get(b)
        if ra and rb:
            sp = ' (%d splits)' % ra['kv_splits'] if a == 'split-kv' else ''
            print('  %-7s %-34s %10.3f %10.3f %7.2fx%s' % (k[0], shape(ra), ra['ms_median'],
                  rb['ms_median'], rb['ms_median'] / ra['ms_median'], sp))
print('\nmode: ssmax vs softmax, B1 H8 L1024 D64 (ms medians of each round)')
for be in sorted({r['backend'] for r in recs if r['compare'] == 'mode'}):
    s = [r['ms_median'] for r in recs if r['compare'] == 'mode' and r['backend'] == be and r['mode'] == 'ssmax']
    m = [r['ms_median'] for r in recs if r['compare'] == 'mode' and r['backend'] == be and r['mode'] == 'softmax']
    s.sort(), m.sort()
    print('  %-7s ssmax %s  softmax %s  -> medians %.3f vs %.3f: %+.1f%%' % (
        be, ' '.join('%.2f' % x for x in s), ' '.join('%.2f' % x for x in m), s[len(s) // 2],
        m[len(m) // 2], 100 * (s[len(s) // 2] / m[len(m) // 2] - 1)))
PY
