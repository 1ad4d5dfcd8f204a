#!/bin/sh
# Verify and benchmark on a machine with a real GPU, from a build made on another machine:
# ./build/ssmax is self-contained (libssmax is linked in; the Vulkan and OpenCL loaders are
# dlopen'ed). Writes OUTDIR/devices.json, OUTDIR/<backend>-<suite>.json and OUTDIR/log.txt, the
# files that go under bench/results/ with the device and driver named.
# usage: sh scripts/gpu-bench.sh OUTDIR [BACKEND...]      (default backends: vulkan opencl)
# A machine without libvulkan takes loader packages from .gl/*.deb (unpacked first, as root).
set -eu
cd "$(dirname "$0")/.."
out=${1:?usage: sh scripts/gpu-bench.sh OUTDIR [BACKEND...]}
shift
backends=${*:-vulkan opencl}
mkdir -p "$out"
if ! ldconfig -p | grep -q 'libvulkan\.so\.1' && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES="$icd"
fi
ssmax=./build/ssmax
log="$out/log.txt"
: >"$log"
run() {
    echo "\$ ssmax $*" | tee -a "$log"
    "$ssmax" "$@" 2>&1 | tee -a "$log" || echo "(exit status $?)" | tee -a "$log"
}
run devices
"$ssmax" devices --json >"$out/devices.json"
for be in $backends; do
    if ! grep -q "\"backend\": \"$be\"" "$out/devices.json"; then
        echo "no $be device here" | tee -a "$log"
        continue
    fi
    run verify --device "$be"
    run bench --device "$be" --suite prefill --json "$out/$be-prefill.json"
    run bench --device "$be" --suite prefill --dtype f16 --json "$out/$be-prefill-f16.json"
    run bench --device "$be" --suite decode --json "$out/$be-decode.json"
    run bench --device "$be" --suite decode --path fused --json "$out/$be-decode-unsplit.json"
    run bench --device "$be" --shape 1,8,8,4096,4096,64 --mode softmax --json "$out/$be-softmax.json"
    run bench --device "$be" --shape 1,8,8,4096,4096,64 --mode ssmax --json "$out/$be-ssmax.json"
done
