#!/usr/bin/env python3
"""Validate the SPIR-V that glslc wrote as a C initializer (-mfmt=c) with spirv-val, so a module the
Vulkan driver would reject fails the build instead of a device run. Writes OUTPUT as a stamp.

usage: spv_val.py SPIRV_VAL TARGET_ENV INPUT OUTPUT
"""
import os
import re
import struct
import subprocess
import sys
import tempfile


def main():
    spirv_val, env, src, stamp = sys.argv[1:5]
    with open(src) as f:
        words = re.findall(r'0x[0-9a-fA-F]{8}', f.read())
    if not words:
        sys.exit('%s: no SPIR-V words' % src)
    fd, tmp = tempfile.mkstemp(suffix='.spv')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(b''.join(struct.pack('<I', int(w, 16)) for w in words))
        r = subprocess.run([spirv_val, '--target-env', env, tmp])
        if r.returncode:
            sys.exit('%s: spirv-val failed' % src)
    finally:
        os.unlink(tmp)
    with open(stamp, 'w') as f:
        f.write('ok\n')


if __name__ == '__main__':
    main()
