#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 20) from the corpus in
# tests/fuzz/corpus (new inputs go to a scratch copy). Any crash fails.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-20}
sh scripts/setup-debian.sh >/dev/null
command -v clang >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang; }
[ -f build-fuzz/build.ninja ] ||
  CC=clang meson setup build-fuzz -Dfuzzing=true -Db_lundef=false -Dtests=disabled -Dtools=false
ninja -C build-fuzz
work=$(mktemp -d)
for t in npy params cli; do
  mkdir -p "$work/$t"
  cp tests/fuzz/corpus/$t/* "$work/$t/"
  ./build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$secs" -max_len=4096 \
    -artifact_prefix="$work/" "$work/$t" 2>&1 | grep -E "^Done|ERROR|SUMMARY" || true
  # any one artifact fails (ls of three patterns succeeds only when all three match)
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    if [ -e "$a" ]; then
      echo "fuzz_$t failed: $a"
      od -An -tx1 "$a" | head -5
      exit 1
    fi
  done
done
rm -rf "$work"
echo "fuzzing: no crash"
