#!/bin/sh
# Installs everything ssmax needs on Debian 12 (idempotent), then configures and builds ./build.
set -eu
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PKGS="build-essential meson ninja-build pkg-config python3 python3-numpy python3-pytest \
  libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers glslc glslang-tools spirv-tools \
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libcmocka-dev valgrind"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
