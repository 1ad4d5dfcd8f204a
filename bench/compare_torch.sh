#!/bin/sh
# Side by side, in one run: ssmax bench on every GPU-API device and PyTorch CPU attention
# (Debian python3-torch with OpenBLAS, float32, 2 threads) on the same shapes; prints the ratios.
# usage: sh bench/compare_torch.sh [OUTDIR]   (needs python3-torch and libopenblas0-pthread)
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/results/local}
mkdir -p "$out"
shapes="1,8,8,512,512,64 1,8,8,1024,1024,64 1,8,8,2048,2048,64 1,8,8,4096,4096,64 1,8,8,1,16384,64"
args=""
for s in $shapes; do args="$args --shape $s"; done
# shellcheck disable=SC2086
./build/ssmax bench --device all $args --iters 7 --warmup 2 --json "$out/ssmax.json"
# shellcheck disable=SC2086
env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SKYLAKEX /usr/bin/python3 bench/torch_baseline.py \
  --threads 2 --iters 7 --warmup 2 $args --json "$out/torch.json"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
ss = json.load(open(d + '/ssmax.json'))
tt = {(r['Lq'], r['Lk'], r['D']): r for r in json.load(open(d + '/torch.json'))}
print('%-8s %-22s %10s %10s %8s' % ('backend', 'shape', 'ssmax ms', 'torch ms', 'ratio'))
for r in ss:
    t = tt.get((r['Lq'], r['Lk'], r['D']))
    if t:
        print('%-8s B%d H%d Lq%-5d Lk%-5d D%d %8.1f %10.1f %8.2fx' % (
            r['backend'], r['B'], r['Hq'], r['Lq'], r['Lk'], r['D'], r['ms_median'],
            t['ms_median'], t['ms_median'] / r['ms_median']))
PY
