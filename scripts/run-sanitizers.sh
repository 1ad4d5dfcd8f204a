#!/bin/sh
# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (leak checks off: Mesa
# and PoCL leak at unload, which we cannot suppress by stack).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
[ -f build-asan/build.ninja ] ||
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:use_sigaltstack=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  SSMAX_REQUIRE_DEVICE=1 SSMAX_TEST_CASES=16 meson test -C build-asan --print-errorlogs --num-processes 2
# ThreadSanitizer on the concurrency tests, on the real drivers: contexts created, used and
# destroyed on 8 threads at once, each with its Vulkan and OpenCL device. Mesa, LLVM and PoCL are
# not instrumented, so what TSan reports inside them is suppressed by library (tests/tsan.supp);
# ssmax's own code, its one-time driver set-up included, is judged.
[ -f build-tsan/build.ninja ] ||
  meson setup build-tsan -Db_sanitize=thread --buildtype=debug
meson configure build-tsan -Dvulkan=enabled -Dopencl=enabled
ninja -C build-tsan
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" SSMAX_REQUIRE_DEVICE=1 \
  meson test -C build-tsan threads drivers-stress --print-errorlogs
# Valgrind memcheck on the device-free suites (CPU path, validator, .npy).
meson test -C build --setup valgrind --suite unit --print-errorlogs
