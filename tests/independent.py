#!/usr/bin/env python3
"""An independent float64 implementation of SPEC.md in numpy, checked against `ssmax run` on every
device this machine has (cpu always; vulkan and opencl when present) on seeded random shapes, modes,
GQA, causal/q_pos, float16 and large-magnitude inputs, every path, LSE and probs, and every switch
of section 7 (--kv-lens, --q-pos P.npy, --window, --softcap, --sinks, --mask).

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


def attention(q, k, v, mode, s, b, causal, q_pos, scale, L=8192, beta=0.1, F=8192, o=1,
              kv_lens=None, q_positions=None, window=0, cap=0.0, sinks=None, mask=None):
    """SPEC.md sections 1-3 and 7, vectorised over keys (the library's reference loops per key).
    q_pos: one value, or None with q_positions (per batch item); mask: [Lq, Lk], [B, 1, Lq, Lk]
    or [B, Hq, Lq, Lk] (float64, -inf hides)."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    out = np.zeros((B, Hq, Lq, D))
    lse = np.zeros((B, Hq, Lq))
    probs = np.zeros((B, Hq, Lq, Lk))
    j = np.arange(Lk)
    for bi in range(B):
        kv = Lk if kv_lens is None else int(kv_lens[bi])
        qp = q_positions[bi] if q_positions is not None else (
            q_pos if q_pos is not None else max(kv - Lq, 0))
        for h in range(Hq):
            g = h // G
            for i in range(Lq):
                pos = qp + i
                vis = j < kv
                if causal:
                    vis &= j <= pos
                if window:
                    vis &= j > pos - window
                if mask is not None:
                    mrow = mask[i] if mask.ndim == 2 else mask[bi, h if mask.shape[1] > 1 else 0, i]
                    vis &= mrow != -np.inf
                n = int(vis.sum())
                sg = None if sinks is None else float(sinks[h])
                if n == 0:
                    lse[bi, h, i] = -np.inf if sg is None else sg
                    continue
                f = factor(mode, h, n, pos, s, b, L, beta, F, o)
                z = f * scale * (k[bi, g][vis] @ q[bi, h, i])
                if cap:
                    z = cap * np.tanh(z / cap)
                if mask is not None:
                    z = z + mrow[vis]
                m = max(z.max(), sg) if sg is not None else z.max()
                w = np.exp(z - m)
                den = w.sum() + (np.exp(sg - m) if sg is not None else 0.0)
                out[bi, h, i] = (w / den) @ v[bi, g][vis]
                lse[bi, h, i] = m + np.log(den)
                probs[bi, h, i, vis] = w / den
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
            # SPEC.md section 7, each switch in about half the cases from case 8 on
            ext = {}
            feats = int(rng.integers(0, 64)) if c >= 8 else 0
            if feats & 1:
                ext['kv_lens'] = rng.integers(max(Lq, 1) if causal else 1, Lk + 1, B).astype(np.int32)
                np.save(P('kvl.npy'), ext['kv_lens'])
                opts += ['--kv-lens', P('kvl.npy')]
                if not any(x == '--q-pos' for x in opts):
                    q_pos = None  # each item's default: kv_lens[b] - Lq
            if feats & 2:
                hi = Lk - Lq if causal else Lk + 5
                ext['q_positions'] = rng.integers(0, max(hi, 0) + 1, B).astype(
                    np.int64 if feats & 32 else np.int32)
                np.save(P('qp.npy'), ext['q_positions'])
                opts = [x for x in opts] + ['--q-pos', P('qp.npy')]
                if '--q-pos' in opts[:-2]:
                    at = opts.index('--q-pos')
                    del opts[at:at + 2]
            if feats & 4 and causal:
                ext['window'] = int(rng.integers(1, Lk + 3))
                opts += ['--window', str(ext['window'])]
            if feats & 8:
                ext['cap'] = float(np.float32(rng.uniform(0.5, 5)))
                opts += ['--softcap', repr(ext['cap'])]
            if feats & 16:
                sk = rng.uniform(-1, 2, Hq).astype(np.float32)
                np.save(P('sinks.npy'), sk)
                ext['sinks'] = sk.astype(np.float64)
                opts += ['--sinks', P('sinks.npy')]
            if c >= 8 and rng.integers(0, 2):
                shape = [(Lq, Lk), (B, 1, Lq, Lk), (B, Hq, Lq, Lk)][int(rng.integers(0, 3))]
                mk = rng.uniform(-2, 1, shape)
                mk[rng.uniform(0, 1, shape) < rng.uniform(0.1, 0.9)] = -np.inf
                mk[..., 0, :] = -np.inf  # the first row of every mask row block is empty
                mdt = np.float16 if rng.integers(0, 2) else np.float32
                mk = mk.astype(mdt)
                np.save(P('mask.npy'), mk)
                ext['mask'] = mk.astype(np.float64)
                opts += ['--mask', P('mask.npy')]
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
                                            L, np.float64(np.float32(beta)), F, o, **ext)
            for dev in devs:
                for path in (['auto'] if dev == 'cpu' else ['fused', 'split-kv', 'unfused']):
                    total += 1
                    extra = ['--probs', P('p.npy')] if path == 'unfused' or dev == 'cpu' else []
                    cmd = [ssmax, 'run', '--device', dev, '--path', path, '--q', P('q.npy'), '--k',
                           P('k.npy'), '--v', P('v.npy'), '--out', P('o.npy'), '--lse',
                           P('l.npy'), '--quiet'] + opts + extra
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    desc = '%s %s B%d Hq%d Hkv%d Lq%d Lk%d D%d %s%s amp %g %s%s' % (
                        dev, path, B, Hq, Hkv, Lq, Lk, D, 'f16' if f16 else 'f32',
                        ' causal q_pos %s' % q_pos if causal else '', amp, mode,
                        ''.join(' ' + x for x in sorted(ext)))
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
                    # empty rows: LSE -inf (without a sink) on both sides, in the same places
                    fin = np.isfinite(ref_l)
                    ok = ok and np.array_equal(fin, np.isfinite(lse)) and np.all(lse[~fin] == ref_l[~fin])
                    lerr = float(np.abs(lse[fin] - ref_l[fin]).max()) if fin.any() else 0.0
                    lmax = float(np.abs(ref_l[fin]).max()) if fin.any() else 0.0
                    ok = ok and nmse <= limit and lerr <= 1e-4 + 1e-5 * lmax
                    perr = 0.0
                    if extra:
                        pr = np.load(P('p.npy')).astype(np.float64)
                        perr = float(np.abs(pr - ref_p).max())
                        # P's error follows the logits' fp32 error, which grows with their size
                        ok = ok and perr <= 1e-5 * max(1.0, lmax)
                    print('%s %s: nmse %.2e (limit %.0e), lse max err %.1e%s' % (
                        'ok  ' if ok else 'FAIL', desc, nmse, limit, lerr,
                        ', probs max err %.1e' % perr if extra else ''))
                    fails += not ok
    print('%d passed, %d failed' % (total - fails, fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
