#!/bin/sh
# Installs, builds and runs the whole test suite; a missing lavapipe or PoCL device fails it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
SSMAX_REQUIRE_DEVICE=1 meson test -C build --print-errorlogs --num-processes 2
