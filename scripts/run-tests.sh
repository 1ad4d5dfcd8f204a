#!/bin/sh
# Installs, builds and runs the whole test suite; a missing lavapipe or PoCL device fails it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
rc=0
SSMAX_REQUIRE_DEVICE=1 meson test -C build --print-errorlogs --num-processes 2 || rc=$?
# One plain summary line for tools that read it.
/usr/bin/python3 - build/meson-logs/testlog.json <<'PY' || true
import json, sys
res = [json.loads(l)['result'] for l in open(sys.argv[1]) if l.strip()]
ok = sum(r == 'OK' for r in res)
skip = sum(r == 'SKIP' for r in res)
print('%d passed, %d failed, %d skipped' % (ok, len(res) - ok - skip, skip))
PY
exit $rc
