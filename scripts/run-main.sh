#!/bin/sh
# The main job: list devices, check SSMax attention on a generated example against the float64
# reference on the best device, then verify and benchmark every device.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
./build/ssmax devices
d=$(mktemp -d)
/usr/bin/python3 - "$d" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
np.save(d + '/q.npy', rng.standard_normal((1, 8, 512, 64), dtype=np.float32))
np.save(d + '/k.npy', rng.standard_normal((1, 2, 512, 64), dtype=np.float32))
np.save(d + '/v.npy', rng.standard_normal((1, 2, 512, 64), dtype=np.float32))
PY
./build/ssmax run --q "$d/q.npy" --k "$d/k.npy" --v "$d/v.npy" --out "$d/o.npy" --lse "$d/lse.npy" \
  --causal --mode ssmax --s 0.43 --check
./build/ssmax verify --device all
./build/ssmax bench --device all --suite quick
rm -rf "$d"
