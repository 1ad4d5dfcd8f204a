#!/bin/sh
# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (leak checks off: Mesa
# and PoCL leak at unload, which we cannot suppress by stack).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup-debian.sh
[ -f build-asan/build.ninja ] ||
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  SSMAX_REQUIRE_DEVICE=1 SSMAX_TEST_CASES=16 meson test -C build-asan --print-errorlogs --num-processes 2
# ThreadSanitizer on the concurrency test (CPU backend: no driver threads to confuse it).
[ -f build-tsan/build.ninja ] ||
  meson setup build-tsan -Db_sanitize=thread -Dvulkan=disabled -Dopencl=disabled --buildtype=debug
ninja -C build-tsan
TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan threads --print-errorlogs
# Valgrind memcheck on the device-free suites (CPU path, validator, .npy).
meson test -C build --setup valgrind --suite unit --print-errorlogs
