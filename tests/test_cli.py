#!/usr/bin/env python3
"""The ssmax CLI contract without numpy: help texts, devices, run on the CPU device, and every kind of
bad input exits 2 with a message naming the problem. usage: test_cli.py path/to/ssmax"""
import json
import os
import struct
import subprocess
import sys
import tempfile

SSMAX = sys.argv[1]
failures = []
passed = [0]


def npy(path, shape, values=None, descr='<f4', fortran=False, raw_tail=b'', truncate=0):
    dict_ = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, 'True' if fortran else 'False',
        ''.join('%d, ' % d for d in shape).rstrip(' ') if len(shape) != 1 else '%d,' % shape[0])
    pad = (64 - (10 + len(dict_) + 1) % 64) % 64
    header = dict_ + ' ' * pad + '\n'
    n = 1
    for d in shape:
        n *= d
    if values is None:
        values = [((i * 37) % 11 - 5) / 7.0 for i in range(n)]
    fmt = {'<f4': 'f', '<f2': 'e', '<f8': 'd'}.get(descr, 'f')
    data = struct.pack('<%d%s' % (n, fmt), *values) + raw_tail
    if truncate:
        data = data[:-truncate]
    with open(path, 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode() + data)


def run(*args):
    p = subprocess.run([SSMAX] + list(args), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def expect(name, args, code, needle=None):
    rc, out, err = run(*args)
    ok = rc == code and (needle is None or needle in out + err)
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

    expect('run ok', base + ['--check', '--lse', P('lse.npy')], 0, 'PASS')
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
    expect('unknown option', base + ['--frob', '1'], 2, '--frob')
    expect('option without value', base + ['--mode'], 2, 'needs a value')
    expect('splits too many', base + ['--path', 'split-kv', '--splits', '100'], 2, 'kv_splits')
    expect('unwritable out', base[:9] + ['/nonexistent/o.npy'], 2, '/nonexistent/o.npy')
    expect('bench bad suite', ['bench', '--suite', 'huge'], 2, '--suite')
    expect('bench bad shape', ['bench', '--shape', '1,2,3'], 2, '--shape')
    expect('bench bad splits', ['bench', '--splits', '300'], 2, '--splits')
    expect('verify cpu', ['verify', '--device', 'cpu'], 0, '0 failed')
    # --tune stores tiles that later contexts load (on the first GPU-API device, if any)
    gpu = [x['spec'] for x in devs if x['backend'] != 'cpu']
    if gpu:
        env = dict(os.environ, SSMAX_CACHE_DIR=P('tunecache'))
        p = subprocess.run([SSMAX, 'bench', '--device', gpu[0], '--tune', '--shape',
                            '1,2,1,16,64,16'], capture_output=True, text=True, env=env, timeout=600)
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

print('%d passed, %d failed' % (passed[0], len(failures)))
sys.exit(1 if failures else 0)
