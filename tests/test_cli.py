#!/usr/bin/env python3
"""The ssmax CLI contract without numpy: help texts, devices, run on the CPU device, and every kind of
bad input exits 2 with a message naming the problem; outputs are written all or nothing and never
over an input. usage: test_cli.py path/to/ssmax"""
import json
import os
import re
import resource
import stat
import struct
import shutil
import subprocess
import sys
import tempfile

SSMAX = os.path.abspath(sys.argv[1])
failures = []
passed = [0]


def npy(path, shape, values=None, descr='<f4', fortran=False, raw_tail=b'', truncate=0, dict_=None):
    dict_ = dict_ or "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, 'True' if fortran else 'False',
        ''.join('%d, ' % d for d in shape).rstrip(' ') if len(shape) != 1 else '%d,' % shape[0])
    pad = (64 - (10 + len(dict_) + 1) % 64) % 64
    header = dict_ + ' ' * pad + '\n'
    n = 1
    for d in shape:
        n *= d
    if values is None:
        values = [((i * 37) % 11 - 5) / 7.0 for i in range(n)]
    fmt = {'<f4': 'f', '<f2': 'e', '<f8': 'd', '<i4': 'i', '<i8': 'q'}.get(descr, 'f')
    data = struct.pack('<%d%s' % (n, fmt), *values) + raw_tail
    if truncate:
        data = data[:-truncate]
    with open(path, 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode() + data)


def run(*args, **kw):
    p = subprocess.run([SSMAX] + list(args), capture_output=True, text=True, timeout=300, **kw)
    return p.returncode, p.stdout, p.stderr


def check(name, ok, detail=''):
    print('%s %s%s' % ('ok  ' if ok else 'FAIL', name, '' if ok else ': ' + detail))
    if ok:
        passed[0] += 1
    else:
        failures.append(name)


def snapshot(folder):
    """{name: bytes} of every file in folder."""
    out = {}
    for n in sorted(os.listdir(folder)):
        p = os.path.join(folder, n)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, 'rb') as f:
                out[n] = f.read()
        else:
            out[n] = None
    return out


def limit_file_size(nbytes):
    """preexec_fn: files this process writes may not grow past nbytes (a full disk, anywhere)."""
    def f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return f


def expect(name, args, code, needle=None, **kw):
    """needle: a string, or a list of strings that must all appear in stdout + stderr."""
    rc, out, err = run(*args, **kw)
    needles = [] if needle is None else [needle] if isinstance(needle, str) else needle
    ok = rc == code and all(n in out + err for n in needles)
    print('%s %s: exit %d%s' % ('ok  ' if ok else 'FAIL', name, rc, '' if ok else
                                 ' (wanted %d with %r)\n  stdout: %s\n  stderr: %s' %
                                 (code, needle, out.strip(), err.strip())))
    if not ok:
        failures.append(name)
    else:
        passed[0] += 1


with tempfile.TemporaryDirectory() as d:
    P = lambda n: os.path.join(d, n)
    npy(P('q.npy'), (1, 4, 5, 8))
    npy(P('k.npy'), (1, 2, 9, 8))
    npy(P('v.npy'), (1, 2, 9, 8))
    npy(P('q16.npy'), (1, 4, 5, 8), descr='<f2')
    npy(P('k3.npy'), (2, 9, 8))
    npy(P('kbad.npy'), (1, 3, 9, 8))
    npy(P('vshape.npy'), (1, 2, 10, 8))
    npy(P('kdim.npy'), (1, 2, 9, 16))
    npy(P('f8.npy'), (1, 4, 5, 8), descr='<f8')
    npy(P('fort.npy'), (1, 4, 5, 8), fortran=True)
    npy(P('trunc.npy'), (1, 4, 5, 8), truncate=6)
    npy(P('extra.npy'), (1, 4, 5, 8), raw_tail=b'1234')
    npy(P('s4.npy'), (4,), [0.1, 0.2, 0.3, 0.4])
    npy(P('s3.npy'), (3,), [0.1, 0.2, 0.3])
    with open(P('garbage.npy'), 'wb') as f:
        f.write(b'this is not numpy')
    base = ['run', '--device', 'cpu', '--q', P('q.npy'), '--k', P('k.npy'), '--v', P('v.npy'),
            '--out', P('o.npy')]

    expect('help', ['--help'], 0, 'devices')
    expect('run help', ['run', '--help'], 0, '--train-len')
    expect('devices help', ['devices', '--help'], 0, '--json')
    expect('verify help', ['verify', '--help'], 0, '--device')
    expect('bench help', ['bench', '--help'], 0, '--suite')
    expect('no command', [], 2, 'usage')
    expect('unknown command', ['frobnicate'], 2, 'unknown command')
    expect('devices', ['devices'], 0, 'CPU reference')
    rc, out, _ = run('devices', '--json')
    try:
        devs = json.loads(out)
        assert any(x['backend'] == 'cpu' for x in devs)
        print('ok   devices --json parses (%d devices)' % len(devs))
    except Exception as e:  # noqa: BLE001
        print('FAIL devices --json: %s' % e)
        failures.append('devices --json')
        devs = []

    # Device identity: "device_uuid" and "driver_uuid" are 8-4-4-4-12 lowercase hex or null (the
    # CPU has none); --device uuid:HEX finds the device, in any case and with or without dashes.
    uuid_re = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
    check('devices --json has device_uuid and driver_uuid, each a UUID or null',
          devs and all(k in x and (x[k] is None or uuid_re.match(x[k]))
                       for x in devs for k in ('device_uuid', 'driver_uuid')),
          out[-1500:])
    check('devices --json: the cpu has no UUID',
          all(x['device_uuid'] is None and x['driver_uuid'] is None
              for x in devs if x['backend'] == 'cpu'), out[-1500:])
    expect('devices prints UUIDs', ['devices'], 0, 'device UUID')
    known = [x for x in devs if x['device_uuid'] and not x['compile_only']]
    if known:
        x = known[0]
        u = x['device_uuid']
        first = [y for y in devs if y['device_uuid'] == u][0]
        for spelling in (u, u.replace('-', '').upper()):
            expect('run --device uuid:%s' % spelling,
                   ['run', '--device', 'uuid:' + spelling] + base[3:] + ['--check'], 0,
                   ['PASS', 'device %s %s' % (first['spec'], first['name'])])
    elif os.environ.get('SSMAX_REQUIRE_DEVICE') == '1':
        check('a device with a UUID is listed', False, out[-1500:])
    expect('run --device uuid: too short', base[:2] + ['uuid:0123'] + base[3:], 2,
           ['uuid:0123', '32 hex digits'])
    expect('run --device uuid: not hex', base[:2] + ['uuid:0123456789abcdef0123456789abcdeZ'] +
           base[3:], 2, ["'Z' is not a hex digit"])
    expect('run --device uuid: no such device', base[:2] + ['uuid:' + 'f' * 32] + base[3:], 2,
           'ffffffff-ffff-ffff-ffff-ffffffffffff')

    expect('run ok', base + ['--check', '--lse', P('lse.npy')], 0, 'PASS')

    # --layout blhd: the same data as [B, L, H, D] files, passed strided; O comes back [B, L, H, D]
    # and equals the bhld run's O, permuted (the cpu device computes both the same way).
    def npy_values(path):
        with open(path, 'rb') as f:
            raw = f.read()
        hl = struct.unpack('<H', raw[8:10])[0]
        body = raw[10 + hl:]
        return list(struct.unpack('<%df' % (len(body) // 4), body)), raw[10:10 + hl].decode()

    def to_blhd(vals, B, H, L, D):
        out = [0.0] * len(vals)
        for b in range(B):
            for h in range(H):
                for i in range(L):
                    for x in range(D):
                        out[((b * L + i) * H + h) * D + x] = vals[((b * H + h) * L + i) * D + x]
        return out

    qv, _ = npy_values(P('q.npy'))
    kv, _ = npy_values(P('k.npy'))
    vv = [((i * 13) % 7 - 3) / 5.0 for i in range(len(kv))]
    npy(P('v2.npy'), (1, 2, 9, 8), vv)
    npy(P('q_blhd.npy'), (1, 5, 4, 8), to_blhd(qv, 1, 4, 5, 8))
    npy(P('k_blhd.npy'), (1, 9, 2, 8), to_blhd(kv, 1, 2, 9, 8))
    npy(P('v_blhd.npy'), (1, 9, 2, 8), to_blhd(vv, 1, 2, 9, 8))
    expect('run bhld for blhd', base[:8] + [P('v2.npy'), '--out', P('o_bhld.npy'), '--causal',
                                            '--layout', 'bhld', '--lse', P('lse_bhld.npy')], 0)
    blhd = ['run', '--device', 'cpu', '--q', P('q_blhd.npy'), '--k', P('k_blhd.npy'), '--v',
            P('v_blhd.npy'), '--causal', '--layout', 'blhd']
    expect('run --layout blhd', blhd + ['--out', P('o_blhd.npy'), '--lse', P('lse_blhd.npy'),
                                        '--check'], 0, 'PASS')
    try:
        ob, _ = npy_values(P('o_bhld.npy'))
        ol, hdr = npy_values(P('o_blhd.npy'))
        lb, _ = npy_values(P('lse_bhld.npy'))
        ll, lhdr = npy_values(P('lse_blhd.npy'))
        check('--layout blhd: O is [B, L, H, D], LSE [B, H, L]',
              ol == to_blhd(ob, 1, 4, 5, 8) and '(1, 5, 4, 8)' in hdr and ll == lb and
              '(1, 4, 5)' in lhdr, hdr + ' / ' + lhdr)
    except OSError as e:
        check('--layout blhd output', False, str(e))
    expect('--layout bad', blhd + ['--out', P('o_x.npy'), '--layout', 'lbhd'], 2,
           "--layout: 'lbhd' is not bhld or blhd")
    for dev in ('vulkan', 'opencl'):
        rc, out, _ = run('devices')
        if dev + ':' in out:
            expect('run --layout blhd on ' + dev,
                   blhd[:2] + [dev] + blhd[3:] + ['--out', P('o_dev.npy'), '--check'], 0, 'PASS')
    expect('run f16 mismatch dtype', ['run', '--device', 'cpu', '--q', P('q16.npy'), '--k', P('k.npy'),
                                      '--v', P('v.npy'), '--out', P('o.npy')], 2, 'does not match')
    expect('run per-head s', base + ['--s', P('s4.npy'), '--check'], 0, 'PASS')
    expect('run all modes', base + ['--mode', 'floor-log', '--floor', '3', '--causal', '--check'], 0)
    expect('run probs', base + ['--probs', P('p.npy'), '--check'], 0, 'probs')
    expect('missing --q', ['run', '--k', P('k.npy'), '--v', P('v.npy'), '--out', P('o.npy')], 2,
           'required')
    expect('missing file', base[:4] + [P('nope.npy')] + base[5:], 2, 'nope.npy')
    expect('garbage file', base[:4] + [P('garbage.npy')] + base[5:], 2, 'not a .npy file')
    expect('float64', base[:4] + [P('f8.npy')] + base[5:], 2, "'<f8' is not supported")
    expect('fortran', base[:4] + [P('fort.npy')] + base[5:], 2, 'fortran_order')
    expect('truncated', base[:4] + [P('trunc.npy')] + base[5:], 2, 'truncated')
    expect('trailing bytes', base[:4] + [P('extra.npy')] + base[5:], 2, 'does not match')
    expect('3-d K', base[:6] + [P('k3.npy')] + base[7:], 2, 'expected 4 dimensions')
    expect('V shape', base[:8] + [P('vshape.npy')] + base[9:], 2, 'shape must equal')
    expect('head_dim mismatch', base[:6] + [P('kdim.npy'), '--v', P('kdim.npy')] + base[9:], 2, 'head_dim')
    expect('GQA ratio', base[:6] + [P('kbad.npy'), '--v', P('kbad.npy')] + base[9:], 2,
           'not a multiple of kv_heads')
    expect('bad mode', base + ['--mode', 'fancy'], 2, '--mode')
    expect('bad path', base + ['--path', 'fast'], 2, '--path')
    expect('bad device', base[:1] + ['--device', 'metal'] + base[3:], 2, 'metal')
    expect('bad scale', base + ['--scale', 'nan'], 2, 'scale')
    expect('negative scale', base + ['--scale', '-1'], 2, 'scale')
    expect('zero scale', base + ['--scale', '0'], 2, 'scale')
    expect('bad s', base + ['--s', 'nan'], 2, 's_all')
    expect('negative s', base + ['--s', '-0.5'], 2, 's_all')
    expect('s wrong length', base + ['--s', P('s3.npy')], 2, 'shape [4]')
    expect('bad b', base + ['--mode', 'ssmax-bias', '--b', 'inf'], 2, 'b_all')
    expect('train-len 1', base + ['--mode', 'logn', '--train-len', '1'], 2, 'train_len')
    expect('floor 0', base + ['--mode', 'floor-log', '--floor', '0'], 2, 'floor_scale')
    expect('q-pos past keys', base + ['--causal', '--q-pos', '5'], 2, 'q_pos')
    expect('negative q-pos', base + ['--causal', '--q-pos', '-1'], 2, '--q-pos')
    expect('probs with fused', base + ['--probs', P('p.npy'), '--path', 'fused'], 2, 'probs')

    # ssmax fading: the paper's Figure 1 on every device, beside the closed form
    expect('fading help', ['fading', '--help'], 0, '--needles')
    expect('fading on every device', ['fading', '--n-max', '100000', '--json', P('fade.json'),
                                      '--csv', P('fade.csv'), '--plot', P('fade.svg')], 0,
           'largest n (100000 keys')
    try:
        with open(P('fade.json')) as f:
            recs = json.load(f)
        keys = {'device', 'mode', 's', 'n', 'measured', 'closed_form', 'abs_error'}
        devnames = {r['device'] for r in recs}
        check('fading --json: records with their fields, every mode and device, within 1e-5',
              recs and all(keys <= set(r) for r in recs) and
              {r['mode'] for r in recs} == {'softmax', 'ssmax', 'logn', 'floor-log'} and
              len(devnames) == len([x for x in devs if not x['compile_only']]) and
              max(r['abs_error'] for r in recs) <= 1e-5 and
              min(r['n'] for r in recs) == 2 and max(r['n'] for r in recs) == 100000,
              str(recs[:2]))
        # SSMax at s = 0.43 (s*m = 2.15 > 1) holds the needle; softmax fades (SPEC.md section 4)
        big = [r for r in recs if r['n'] == 100000]
        check('fading: softmax fades, ssmax does not',
              all(r['measured'] < 0.01 for r in big if r['mode'] == 'softmax') and
              all(r['measured'] > 0.99 for r in big if r['mode'] == 'ssmax'), str(big))
        with open(P('fade.svg')) as f:
            svg = f.read()
        check('fading --plot writes an SVG with a line per mode',
              svg.startswith('<svg') and svg.count('<polyline') == 4 and '</svg>' in svg)
        with open(P('fade.csv')) as f:
            check('fading --csv', f.readline().startswith('device,mode,s,n,'))
    except (OSError, ValueError) as e:
        check('fading outputs', False, str(e))
    expect('fading needles and noise', ['fading', '--device', 'cpu', '--n-max', '1000',
                                        '--needles', '3', '--noise', '0.5', '--modes',
                                        'softmax,ssmax'], 0, '3 needles')
    expect('fading bad mode', ['fading', '--modes', 'softmax,fancy'], 2, '--modes')
    expect('fading repeated mode', ['fading', '--modes', 'ssmax,ssmax'], 2, '--modes')
    expect('fading n-max 1', ['fading', '--n-max', '1'], 2, '--n-max')
    expect('fading needles past n', ['fading', '--n-max', '10', '--needles', '10'], 2, '--needles')
    expect('fading bad s', ['fading', '--s', '-1'], 2, 's_all')
    expect('fading bad noise', ['fading', '--noise', 'nan'], 2, '--noise')

    # SPEC.md section 7: --kv-lens, --q-pos FILE, --window, --softcap, --sinks, --mask
    # (q [1, 4, 5, 8], k [1, 2, 9, 8]: B 1, Hq 4, Lq 5, Lk 9)
    inf = float('inf')
    npy(P('kvl.npy'), (1,), [7], descr='<i4')
    npy(P('kvl0.npy'), (1,), [0], descr='<i4')
    npy(P('kvlneg.npy'), (1,), [-3], descr='<i4')
    npy(P('kvl2.npy'), (2,), [7, 7], descr='<i4')
    npy(P('kvlf.npy'), (1,), [7.0])
    npy(P('qp.npy'), (1,), [2], descr='<i8')
    npy(P('qp32.npy'), (1,), [1], descr='<i4')
    npy(P('sk.npy'), (4,), [0.5, -1, 2, 0])
    mvals = [(-inf if (i * 7) % 5 == 0 else ((i * 3) % 4 - 2) / 3.0) for i in range(45)]
    npy(P('m.npy'), (5, 9), mvals)
    npy(P('m16.npy'), (5, 9), mvals, descr='<f2')
    npy(P('mb1.npy'), (1, 1, 5, 9), mvals)
    npy(P('mbh.npy'), (1, 4, 5, 9), mvals * 4)
    npy(P('mbad.npy'), (5, 8), mvals[:40])
    full = ['--kv-lens', P('kvl.npy'), '--q-pos', P('qp.npy'), '--causal', '--window', '3',
            '--softcap', '2.5', '--sinks', P('sk.npy'), '--mask', P('m.npy')]
    expect('run every section 7 switch --check', base + full + ['--lse', P('l7.npy'), '--check'],
           0, ['PASS', 'check LSE'])
    expect('run --mask f16, [B,1,Lq,Lk], [B,Hq,Lq,Lk]', base + ['--mask', P('m16.npy'), '--check'],
           0, 'PASS')
    expect('run --mask [B,1,Lq,Lk]', base + ['--mask', P('mb1.npy'), '--check'], 0, 'PASS')
    expect('run --mask [B,Hq,Lq,Lk] --probs', base + ['--mask', P('mbh.npy'), '--probs',
                                                        P('p7.npy'), '--check'], 0, 'probs')
    expect('run --q-pos int32 file, --sinks scalar', base + ['--q-pos', P('qp32.npy'), '--sinks',
                                                             '0.25', '--check'], 0, 'PASS')
    expect('--kv-lens 0', base + ['--kv-lens', P('kvl0.npy')], 2, 'kv_lens[0]')
    expect('--kv-lens negative', base + ['--kv-lens', P('kvlneg.npy')], 2, 'must be >= 0')
    expect('--kv-lens wrong length', base + ['--kv-lens', P('kvl2.npy')], 2, 'one value per batch')
    expect('--kv-lens float', base + ['--kv-lens', P('kvlf.npy')], 2, "'<f4' is not supported")
    expect('--q-pos file past keys', base + ['--causal', '--q-pos', P('qp.npy'), '--kv-lens',
                                             P('kvl.npy'), '--window', '2'], 0)
    expect('--window 0', base + ['--causal', '--window', '0'], 2, '--window')
    expect('--window without causal', base + ['--window', '3'], 2, 'window')
    expect('--softcap negative', base + ['--softcap', '-1'], 2, '--softcap')
    expect('--softcap nan', base + ['--softcap', 'nan'], 2, '--softcap')
    expect('--sinks nan', base + ['--sinks', 'nan'], 2, 'sinks[0]')
    expect('--sinks wrong length', base + ['--sinks', P('s3.npy')], 2, 'shape [4]')
    expect('--mask wrong shape', base + ['--mask', P('mbad.npy')], 2, '[5,9]')
    expect('--mask missing', base + ['--mask', P('nope.npy')], 2, '--mask')
    expect('--mask is the output', base[:-1] + [P('m.npy'), '--mask', P('m.npy')], 2, '--mask')
    for dev in ('vulkan', 'opencl'):
        rc, out, _ = run('devices')
        if dev + ':' in out:
            for path in ('fused', 'split-kv', 'unfused'):
                expect('run every section 7 switch on %s %s' % (dev, path),
                       base[:2] + [dev] + base[3:] + full + ['--path', path, '--check'], 0, 'PASS')
    expect('unknown option', base + ['--frob', '1'], 2, '--frob')
    expect('option without value', base + ['--mode'], 2, 'needs a value')
    expect('splits too many', base + ['--path', 'split-kv', '--splits', '100'], 2, 'kv_splits')
    expect('unwritable out', base[:10] + ['/nonexistent/o.npy'], 2, '/nonexistent/o.npy')
    expect('bench bad suite', ['bench', '--suite', 'huge'], 2, '--suite')
    expect('bench bad shape', ['bench', '--shape', '1,2,3'], 2, '--shape')
    expect('bench bad splits', ['bench', '--splits', '300'], 2, '--splits')
    expect('verify cpu', ['verify', '--device', 'cpu'], 0, '0 failed')

    # ---- exit codes as the README states them ----
    expect('device index not here', base[:1] + ['--device', 'vulkan:7'] + base[3:], 2, 'vulkan:7')
    expect('device index not here (opencl)', base[:1] + ['--device', 'opencl:99'] + base[3:], 2,
           'opencl:99')
    expect('bench device index not here', ['bench', '--device', 'cpu:3'], 2, 'cpu:3')
    expect('verify device index not here', ['verify', '--device', 'vulkan:7'], 2, 'vulkan:7')
    expect('verify bad seed', ['verify', '--seed', '-1'], 2, '--seed')
    os.mkdir(P('folder'))
    expect('q is a folder', base[:4] + [P('folder')] + base[5:], 2, ['--q', 'is a directory'])
    expect('v is a folder', base[:8] + [P('folder')] + base[9:], 2, ['--v', 'is a directory'])
    expect('s is a folder', base + ['--s', P('folder')], 2, ['--s', 'is a directory'])
    expect('out is a folder', base[:10] + [P('folder')], 2, ['--out', 'is a directory'])
    expect('q is /dev/null', base[:4] + ['/dev/null'] + base[5:], 2, ['--q', 'not a .npy file'])
    with open(P('q.npy'), 'rb') as f:
        expect('q from a pipe', base[:4] + ['/dev/stdin'] + base[5:] + ['--check'], 0, 'PASS',
               stdin=f)
    with open('/dev/full', 'w') as full:
        p = subprocess.run([SSMAX, 'devices'], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    check('devices to a full disk', p.returncode == 2 and 'standard output' in p.stderr,
          'exit %d: %s' % (p.returncode, p.stderr))

    # ---- numbers: decimal digits in range, nothing read as 4294967295 ----
    for opt, good in [('--train-len', '8'), ('--floor', '3'), ('--pos-offset', '1'), ('--q-pos', '0'),
                      ('--splits', '1')]:
        for bad in ['-1', '+1', ' 1', '1 ', '0x10', '1e3', '', 'ten', '4294967296',
                    '99999999999999999999999']:
            expect('run %s %r' % (opt, bad), base + [opt, bad], 2, opt)
        expect('run %s %s' % (opt, good), base + [opt, good, '--quiet'], 0)
    for opt in ['--iters', '--warmup', '--splits']:
        for bad in ['-1', '+1', ' 1', '0x10', '', '4294967295', '99999999999999999999999']:
            expect('bench %s %r' % (opt, bad), ['bench', '--device', 'cpu', opt, bad], 2, opt)
    expect('bench --iters 0', ['bench', '--device', 'cpu', '--iters', '0'], 2, '--iters')
    for bad in ['1,1,1,-1,1,8', '1,1,1,0,1,8', '-1,1,1,1,1,8', '1,1,1,1,1,x', '1,1,1,1,1,8,9',
                '1,1,1,1,1,8,', ',1,1,1,1,8', '1,1,1,1,1', '', '1,1,1,4294967296,1,8',
                '1,1,1,1,1,+8', '1,1,1,1,1, 8',
                '2147483648,2147483648,1,1,1,1',       # Q's element count times 4 wraps to 0
                '65536,65536,65536,65536,65536,64',    # products past 2^64
                '4294967295,4294967295,4294967295,4294967295,4294967295,1024',
                '1,3,2,4,4,8',                          # not a GQA ratio
                '1,1,1,1,1,4096']:                      # head_dim past the reference's limit
        expect('bench --shape %r' % bad, ['bench', '--device', 'cpu', '--shape', bad], 2, '--shape')

    # ---- .npy headers NumPy rejects ----
    npy(P('extrakey.npy'), (1, 4, 5, 8), dict_="{'descr': '<f4', 'fortran_order': False, "
        "'shape': (1, 4, 5, 8), 'x': \"'shape': (1, 4, 5, 9)\", }")
    npy(P('falsehood.npy'), (1, 4, 5, 8), dict_="{'descr': '<f4', 'fortran_order': Falsehood, "
        "'shape': (1, 4, 5, 8), }")
    npy(P('keytwice.npy'), (1, 4, 5, 8), dict_="{'descr': '<f4', 'fortran_order': False, "
        "'shape': (1, 4, 5, 8), 'shape': (1, 4, 5, 8), }")
    expect('npy extra key', base[:4] + [P('extrakey.npy')] + base[5:], 2, ["the key 'x'", 'extrakey.npy'])
    expect('npy Falsehood', base[:4] + [P('falsehood.npy')] + base[5:], 2,
           ['neither True nor False', 'falsehood.npy'])
    expect('npy key twice', base[:4] + [P('keytwice.npy')] + base[5:], 2, 'twice')

    # ---- no output may be an input or another output ----
    inputs = snapshot(d)
    expect('out is q', base[:10] + [P('q.npy')], 2, ['--out', '--q'])
    expect('out is k', base[:10] + [P('k.npy')], 2, ['--out', '--k'])
    expect('out is ./q (relative)', ['run', '--device', 'cpu', '--q', 'q.npy', '--k', 'k.npy', '--v',
                                     'v.npy', '--out', './q.npy'], 2, ['--out', '--q'], cwd=d)
    os.link(P('q.npy'), P('hardq.npy'))
    os.symlink('v.npy', P('symv.npy'))
    expect('out is a hard link to q', base[:10] + [P('hardq.npy')], 2, ['--out', '--q'])
    expect('lse is a symlink to v', base + ['--lse', P('symv.npy')], 2, ['--lse', '--v'])
    expect('probs is --s', base + ['--s', P('s4.npy'), '--probs', P('s4.npy')], 2, ['--probs', '--s'])
    expect('lse is out', base + ['--lse', P('o.npy')], 2, ['--lse', '--out'])
    expect('lse is out (new file, ./)', ['run', '--device', 'cpu', '--q', 'q.npy', '--k', 'k.npy',
                                         '--v', 'v.npy', '--out', 'new.npy', '--lse', './new.npy'], 2,
           ['--lse', '--out'], cwd=d)
    os.mkdir(P('sub'))
    expect('probs is lse (via ..)', base + ['--lse', P('l.npy'), '--probs', P('sub/../l.npy')], 2,
           ['--probs', '--lse'])
    after = snapshot(d)
    for n in inputs:
        if n != 'o.npy' and inputs[n] is not None:
            check('input %s untouched' % n, after.get(n) == inputs[n])
    check('no output file made by a refused run', 'new.npy' not in after and 'l.npy' not in after,
          str(sorted(after)))
    expect('bench json is csv', ['bench', '--device', 'cpu', '--shape', '1,1,1,1,1,8', '--json',
                                 P('r.json'), '--csv', P('sub/../r.json')], 2, ['--csv', '--json'])

    # ---- outputs are written all or nothing ----
    od = P('outs')
    os.mkdir(od)
    O = lambda n: os.path.join(od, n)
    for n in ['o.npy', 'l.npy', 'p.npy']:
        with open(O(n), 'wb') as f:
            f.write(b'previous ' + n.encode())
    before = snapshot(od)
    outs = base[:10] + [O('o.npy'), '--lse', O('l.npy'), '--probs', O('p.npy')]

    def unchanged(name):
        now = snapshot(od)
        check(name + ': previous files kept, no temporary file left', now == before,
              'folder now holds %s' % {k: (v[:20] if v else v) for k, v in now.items()})

    expect('lse on a full device', base[:10] + [O('o.npy'), '--lse', '/dev/full'], 2,
           ['--lse', '/dev/full'])
    unchanged('lse on a full device')
    expect('probs on a full device', outs[:-1] + ['/dev/full'], 2, ['--probs', '/dev/full'])
    unchanged('probs on a full device')
    expect('probs in a missing folder', outs[:-1] + [O('nope/p.npy')], 2, ['--probs', 'nope'])
    unchanged('probs in a missing folder')
    expect('new out, lse in a missing folder', base[:10] + [O('new.npy'), '--lse', O('nope/l.npy')], 2,
           ['--lse', 'nope'])
    unchanged('new out, lse in a missing folder')
    # outputs written in place (descriptors, pipes) may not be an input or another output either
    qcopy = O('qcopy.npy')
    shutil.copy(P('q.npy'), qcopy)
    fd = os.open(qcopy, os.O_WRONLY | os.O_APPEND)
    expect('out on /dev/fd/N open on an input',
           ['run', '--device', 'cpu', '--q', qcopy] + base[5:9] + ['--out', '/dev/fd/%d' % fd], 2,
           ['--out', 'same file as the input --q'], pass_fds=(fd,))
    os.close(fd)
    with open(P('q.npy'), 'rb') as a, open(qcopy, 'rb') as b:
        check('out on /dev/fd/N open on an input: the input unchanged', a.read() == b.read())
    os.unlink(qcopy)
    before = snapshot(od)
    r, w = os.pipe()
    expect('out and lse on the same pipe', base[:10] + ['/dev/fd/%d' % w, '--lse', '/dev/fd/%d' % w],
           2, ['--lse', 'same file as the output --out'], pass_fds=(w,))
    os.close(r)
    os.close(w)
    expect('out and lse both on /dev/null', base[:10] + ['/dev/null', '--lse', '/dev/null'], 0)
    # a file size limit is a full disk for regular files: O (768 bytes) and LSE (208) fit under
    # 800 bytes, the weights (848) do not
    expect('probs past a file size limit', outs, 2, ['--probs', 'p.npy'],
           preexec_fn=limit_file_size(800))
    unchanged('probs past a file size limit')
    expect('every output past a file size limit', outs, 2, '--out', preexec_fn=limit_file_size(100))
    unchanged('every output past a file size limit')
    old_umask = os.umask(0o022)
    expect('all outputs written', outs + ['--quiet'], 0)
    os.umask(old_umask)
    now = snapshot(od)
    check('all outputs replaced, nothing else', sorted(now) == ['l.npy', 'o.npy', 'p.npy'] and
          all(now[n].startswith(b'\x93NUMPY') for n in now), str(sorted(now)))
    check('outputs keep the previous files\' mode', stat.S_IMODE(os.stat(O('o.npy')).st_mode) == 0o644)
    os.chmod(O('o.npy'), 0o600)
    expect('rewrite', outs + ['--quiet'], 0)
    check('a rewritten output keeps its mode', stat.S_IMODE(os.stat(O('o.npy')).st_mode) == 0o600)
    # special files are written in place: /dev/null, and /dev/stdout (messages then go to stderr)
    expect('out to /dev/null', base[:10] + ['/dev/null', '--lse', '/dev/null'], 0)
    p = subprocess.run([SSMAX] + base[:10] + ['/dev/stdout'], capture_output=True, timeout=300)
    with open(O('o.npy'), 'rb') as f:
        want = f.read()
    check('out to /dev/stdout', p.returncode == 0 and p.stdout == want and b'attention' in p.stderr,
          'exit %d, %d bytes' % (p.returncode, len(p.stdout)))
    # bench's records
    bench = ['bench', '--device', 'cpu', '--shape', '1,2,1,3,5,8', '--iters', '1', '--warmup', '0']
    with open(O('r.json'), 'w') as f:
        f.write('previous json')
    before = snapshot(od)
    expect('bench json on a full device', bench + ['--json', '/dev/full'], 2, ['--json', '/dev/full'])
    expect('bench csv on a full device', bench + ['--json', O('r.json'), '--csv', '/dev/full'], 2,
           ['--csv', '/dev/full'])
    unchanged('bench csv on a full device')
    expect('bench json in a missing folder', bench + ['--json', O('nope/r.json')], 2, 'nope')
    expect('bench json past a file size limit', bench + ['--json', O('r.json')], 2, '--json',
           preexec_fn=limit_file_size(64))
    unchanged('bench json past a file size limit')
    p = subprocess.run([SSMAX] + bench + ['--json', '/dev/stdout'], capture_output=True, text=True,
                       timeout=300)
    try:
        ok = p.returncode == 0 and len(json.loads(p.stdout)) == 1 and 'GFLOP/s' in p.stderr
    except ValueError:
        ok = False
    check('bench json to /dev/stdout (the table to stderr)', ok, p.stdout[:200])
    expect('bench json and csv', bench + ['--json', O('r.json'), '--csv', O('r.csv')], 0)
    try:
        with open(O('r.json')) as f:
            recs = json.load(f)
        with open(O('r.csv')) as f:
            lines = f.read().splitlines()
        check('bench records', len(recs) == 1 and recs[0]['Lk'] == 5 and len(lines) == 2 and
              recs[0]['api'] == 'attn' and recs[0]['host_ms_median'] >= 0)
    except Exception as e:  # noqa: BLE001
        check('bench records', False, str(e))
    expect('bench through a plan', bench + ['--plan', '--json', O('rp.json')], 0)
    try:
        with open(O('rp.json')) as f:
            recs = json.load(f)
        check('bench plan records', len(recs) == 1 and recs[0]['api'] == 'plan' and
              recs[0]['verified'] is True)
    except Exception as e:  # noqa: BLE001
        check('bench plan records', False, str(e))
    # a real full disk: a 64 KiB tmpfs, where the machine lets us mount one (CI runs as root)
    mnt = P('tmpfs')
    os.mkdir(mnt)
    mounted = os.geteuid() == 0 and subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], capture_output=True).returncode == 0
    if not mounted:
        print('skip full tmpfs (cannot mount one here)')
    else:
        try:
            npy(P('qbig.npy'), (1, 4, 512, 8))  # O is 64 KiB + 128 bytes: more than the tmpfs holds
            with open(os.path.join(mnt, 'o.npy'), 'wb') as f:
                f.write(b'previous o.npy')
            tb = snapshot(mnt)
            expect('full tmpfs', ['run', '--device', 'cpu', '--q', P('qbig.npy'), '--k', P('k.npy'),
                                  '--v', P('v.npy'), '--out', os.path.join(mnt, 'o.npy')], 2,
                   ['--out', 'No space left'])
            check('full tmpfs: previous file kept, no temporary file left', snapshot(mnt) == tb,
                  str(sorted(snapshot(mnt))))
        finally:
            subprocess.run(['umount', mnt])

    # --tune stores tiles that later contexts load (on the first GPU-API device, if any)
    gpu = [x['spec'] for x in devs if x['backend'] != 'cpu']
    if gpu:
        env = dict(os.environ, SSMAX_CACHE_DIR=P('tunecache'))
        # two candidates (the whole grid compiles 28 pipelines: minutes on a cold shader cache)
        p = subprocess.run([SSMAX, 'bench', '--device', gpu[0], '--tune-tiles',
                            'rows,1,1;rows,2,1;16,16,4', '--shape', '1,2,1,16,64,16'],
                           capture_output=True, text=True, env=env, timeout=600)
        ok = p.returncode == 0 and 'stored' in p.stdout
        env['SSMAX_LOG'] = '3'
        q = subprocess.run([SSMAX] + base[:2] + [gpu[0]] + base[3:] + ['--check'], capture_output=True,
                           text=True, env=env, timeout=300)
        ok = ok and q.returncode == 0 and 'tuned tiles loaded' in q.stderr
        print('%s bench --tune on %s' % ('ok  ' if ok else 'FAIL', gpu[0]))
        if ok:
            passed[0] += 1
        else:
            failures.append('tune')
            print(p.stdout[-2000:], p.stderr[-2000:], q.stderr[-2000:])

    # Devices that compile but cannot run: RADV's null hardware, which RADV lists when
    # RADV_FORCE_FAMILY names a GPU family (set here, for these runs only). Skipped where RADV is
    # not installed (Debian: mesa-vulkan-drivers).
    nenv = dict(os.environ, RADV_FORCE_FAMILY='navi21')
    rc, out, _ = run('devices', '--json', env=nenv)
    ndevs = json.loads(out) if rc == 0 else []
    null = [x for x in ndevs if x['backend'] == 'vulkan' and x['name'].startswith('Null hardware')]
    if not null:
        print('skip RADV null hardware: not listed (RADV missing?)')
    else:
        spec = null[0]['spec']
        check('devices --json marks %s compile_only, not auto' % spec,
              null[0]['compile_only'] is True and null[0]['auto'] is False, str(null[0]))
        expect('devices marks the null device', ['devices'], 0, 'compile only', env=nenv)
        expect('run on the null device', ['run', '--device', spec] + base[3:], 4,
               ['ssmax run', spec, 'Null hardware', 'cannot run them'], env=nenv)
        expect('verify on the null device', ['verify', '--device', spec], 4, 'cannot run them',
               env=nenv)
        expect('bench on the null device', ['bench', '--device', spec], 4, 'cannot run them',
               env=nenv)
        rc, out, err = run('pipelines', '--device', spec, '--head-dim', '64,128', '--json',
                           P('pipes.json'), '--spirv', P('spv'), env=nenv)
        try:
            recs = json.load(open(P('pipes.json')))
            kinds = {(r['case'], r['dtype']) for r in recs}
            fused = [r for r in recs if r['case'] == 'prefill']
            ok = (rc == 0 and all(not r.get('error') for r in recs) and
                  {'prefill', 'decode', 'merge', 'unfused', 'mask'} <= {c for c, _ in kinds} and
                  all(r['stats'] and 'VGPRs' in r['stats'] and 'Spilled SGPRs' in r['stats']
                      for r in recs) and
                  all(isinstance(r['spec_constants'], dict) for r in recs) and
                  len(fused) == 4 and 'VGPRs' in out)
            spv = sorted(os.listdir(P('spv')))
            spvs = [n for n in spv if n.endswith('.spv')]
            ok = ok and len(spvs) == len(recs) and len(spv) == 2 * len(recs)
            with open(os.path.join(P('spv'), spvs[0]), 'rb') as f:
                ok = ok and f.read(4) == struct.pack('<I', 0x07230203)
            check('pipelines on the null device: %d pipelines with RADV statistics' % len(recs),
                  ok, 'exit %d\n%s\n%s' % (rc, out[-1500:], err[-1500:]))
        except Exception as e:  # noqa: BLE001
            check('pipelines on the null device', False, '%s: exit %d %s' % (e, rc, err[-1500:]))
        expect('pipelines help', ['pipelines', '--help'], 0, '--spirv')
        expect('pipelines bad option', ['pipelines', '--frob'], 2, 'unknown option')
        expect('pipelines bad head dim', ['pipelines', '--head-dim', '6x'], 2, '--head-dim')
        expect('pipelines on cpu', ['pipelines', '--device', 'cpu'], 2, 'builds no pipelines')

print('%d passed, %d failed' % (passed[0], len(failures)))
sys.exit(1 if failures else 0)
