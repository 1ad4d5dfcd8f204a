#!/usr/bin/env python3
"""An independent float64 implementation of SPEC.md in numpy, checked against `ssmax run` on every
device this machine has (cpu always; vulkan and opencl when present) on seeded random shapes, modes,
GQA, causal/q_pos, float16 and large-magnitude inputs, every path, LSE and probs.

usage: independent.py path/to/ssmax [--device SPEC ...] [--cases N] [--seed S]
Exit 77 without numpy (unless SSMAX_REQUIRE_DEVICE=1)."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print('numpy not available: skipped')
    sys.exit(1 if os.environ.get('SSMAX_REQUIRE_DEVICE') == '1' else 77)

MODES = ['softmax', 'ssmax', 'ssmax-bias', 'logn', 'floor-log']


def factor(mode, h, n, pos, s, b, L, beta, F, o):
    if mode == 'softmax':
        return 1.0
    if mode == 'ssmax':
        return s[h] * np.log(n)
    if mode == 'ssmax-bias':
        return s[h] * np.log(n) + b[h]
    if mode == 'logn':
        return max(1.0, np.log(n) / np.log(L))
    return 1.0 + beta * np.log(np.floor((pos + o) / F) + 1.0)


def attention(q, k, v, mode, s, b, causal, q_pos, scale, L=8192, beta=0.1, F=8192, o=1):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    out = np.zeros((B, Hq, Lq, D))
    lse = np.zeros((B, Hq, Lq))
    probs = np.zeros((B, Hq, Lq, Lk))
    for h in range(Hq):
        g = h // G
        for i in range(Lq):
            pos = q_pos + i
            n = min(pos + 1, Lk) if causal else Lk
            f = factor(mode, h, n, pos, s, b, L, beta, F, o)
            logits = f * scale * np.einsum('bd,bjd->bj', q[:, h, i], k[:, g, :n])
            m = logits.max(axis=1, keepdims=True)
            w = np.exp(logits - m)
            z = w.sum(axis=1, keepdims=True)
            out[:, h, i] = np.einsum('bj,bjd->bd', w / z, v[:, g, :n])
            lse[:, h, i] = (m + np.log(z))[:, 0]
            probs[:, h, i, :n] = w / z
    return out, lse, probs


def devices(ssmax):
    out = subprocess.run([ssmax, 'devices', '--json'], capture_output=True, text=True).stdout
    import json
    specs = ['cpu']
    for d in json.loads(out):
        if d['backend'] != 'cpu' and d['spec'].split(':')[0] not in [x.split(':')[0] for x in specs]:
            specs.append(d['spec'])
    return specs


def main():
    ssmax = sys.argv[1]
    args = sys.argv[2:]
    cases = 24
    seed = 12345
    devs = []
    while args:
        a = args.pop(0)
        if a == '--device':
            devs.append(args.pop(0))
        elif a == '--cases':
            cases = int(args.pop(0))
        elif a == '--seed':
            seed = int(args.pop(0))
    devs = devs or devices(ssmax)
    rng = np.random.default_rng(seed)
    print('independent float64 check, seed %d, devices %s' % (seed, ', '.join(devs)))
    fails = 0
    total = 0
    with tempfile.TemporaryDirectory() as d:
        P = lambda n: os.path.join(d, n)
        for c in range(cases):
            mode = MODES[c % 5]
            f16 = c % 3 == 2
            B = int(rng.integers(1, 3))
            Hkv = int(rng.integers(1, 3))
            Hq = Hkv * int(rng.choice([1, 2, 4]))
            D = int(rng.choice([8, 16, 40, 64, 96, 128]))
            Lk = int(rng.choice([1, 3, 7, 33, 113, 300]))
            Lq = int(rng.choice([1, 2, 7, 33]))
            causal = bool(rng.integers(0, 2))
            if causal and Lq > Lk:
                Lq = Lk
            q_pos = Lk - Lq if causal else max(Lk - Lq, 0)
            opts = []
            if causal and Lk > Lq and rng.integers(0, 2):
                q_pos = int(rng.integers(0, Lk - Lq + 1))
                opts += ['--q-pos', str(q_pos)]
            amp = 20.0 if c % 7 == 6 else 1.0
            dt = np.float16 if f16 else np.float32
            q = (rng.uniform(-amp, amp, (B, Hq, Lq, D))).astype(dt)
            k = (rng.uniform(-amp, amp, (B, Hkv, Lk, D))).astype(dt)
            v = rng.uniform(-1, 1, (B, Hkv, Lk, D)).astype(dt)
            s = rng.uniform(0.1, 0.6, Hq).astype(np.float32)
            b = rng.uniform(-0.5, 0.5, Hq).astype(np.float32)
            np.save(P('q.npy'), q)
            np.save(P('k.npy'), k)
            np.save(P('v.npy'), v)
            np.save(P('s.npy'), s)
            np.save(P('b.npy'), b)
            L, beta, F, o = 5, 0.25, 4, 1
            opts += ['--mode', mode, '--s', P('s.npy'), '--b', P('b.npy'), '--train-len', str(L),
                     '--beta', str(beta), '--floor', str(F), '--pos-offset', str(o)]
            if causal:
                opts.append('--causal')
            ref_o, ref_l, ref_p = attention(q, k, v, mode, s.astype(np.float64),
                                            b.astype(np.float64), causal, q_pos, 1 / np.sqrt(D),
                                            L, np.float64(np.float32(beta)), F, o)
            for dev in devs:
                for path in (['auto'] if dev == 'cpu' else ['fused', 'split-kv', 'unfused']):
                    total += 1
                    extra = ['--probs', P('p.npy')] if path == 'unfused' or dev == 'cpu' else []
                    cmd = [ssmax, 'run', '--device', dev, '--path', path, '--q', P('q.npy'), '--k',
                           P('k.npy'), '--v', P('v.npy'), '--out', P('o.npy'), '--lse',
                           P('l.npy'), '--quiet'] + opts + extra
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    desc = '%s %s B%d Hq%d Hkv%d Lq%d Lk%d D%d %s%s amp %g %s' % (
                        dev, path, B, Hq, Hkv, Lq, Lk, D, 'f16' if f16 else 'f32',
                        ' causal q_pos %d' % q_pos if causal else '', amp, mode)
                    if r.returncode != 0:
                        print('FAIL %s: exit %d: %s' % (desc, r.returncode, r.stderr.strip()))
                        fails += 1
                        continue
                    got = np.load(P('o.npy'))
                    lse = np.load(P('l.npy')).astype(np.float64)
                    ok = got.dtype == dt and got.shape == q.shape and np.all(np.isfinite(got))
                    err = got.astype(np.float64) - ref_o
                    nmse = float((err ** 2).sum() / max((ref_o ** 2).sum(), 1e-300))
                    limit = 5e-4 if f16 else (1e-12 if dev == 'cpu' else 1e-8)
                    lerr = float(np.abs(lse - ref_l).max())
                    ok = ok and nmse <= limit and lerr <= 1e-4 + 1e-5 * float(np.abs(ref_l).max())
                    perr = 0.0
                    if extra:
                        pr = np.load(P('p.npy')).astype(np.float64)
                        perr = float(np.abs(pr - ref_p).max())
                        # P's error follows the logits' fp32 error, which grows with their size
                        ok = ok and perr <= 1e-5 * max(1.0, float(np.abs(ref_l).max()))
                    print('%s %s: nmse %.2e (limit %.0e), lse max err %.1e%s' % (
                        'ok  ' if ok else 'FAIL', desc, nmse, limit, lerr,
                        ', probs max err %.1e' % perr if extra else ''))
                    fails += not ok
    print('%d passed, %d failed' % (total - fails, fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
