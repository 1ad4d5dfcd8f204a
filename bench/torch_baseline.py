#!/usr/bin/env python3
"""PyTorch CPU attention (matmul, softmax, matmul; float32) on the shapes ssmax bench uses, for
side-by-side ratios. Run with Debian's python3-torch:
  OPENBLAS_CORETYPE=SKYLAKEX /usr/bin/python3 bench/torch_baseline.py --threads 2 --json out.json
Shapes: B,Hq,Hkv,Lq,Lk,D (repeatable --shape); FLOPs as ssmax bench counts them."""
import argparse
import json
import math
import time

import torch


def run(shape, causal, iters, warmup):
    B, Hq, Hkv, Lq, Lk, D = shape
    g = torch.Generator().manual_seed(0)
    q = torch.rand(B, Hq, Lq, D, generator=g) * 2 - 1
    k = torch.rand(B, Hkv, Lk, D, generator=g) * 2 - 1
    v = torch.rand(B, Hkv, Lk, D, generator=g) * 2 - 1
    k = k.repeat_interleave(Hq // Hkv, dim=1)
    v = v.repeat_interleave(Hq // Hkv, dim=1)
    s_fac = 0.43 * math.log(Lk) / math.sqrt(D)
    mask = None
    if causal:
        i = torch.arange(Lq).unsqueeze(1) + (Lk - Lq)
        mask = torch.arange(Lk).unsqueeze(0) > i
    times = []
    for it in range(warmup + iters):
        t0 = time.perf_counter()
        s = torch.matmul(q, k.transpose(-1, -2)) * s_fac
        if mask is not None:
            s = s.masked_fill(mask, float('-inf'))
        p = torch.softmax(s, dim=-1)
        o = torch.matmul(p, v)
        t1 = time.perf_counter()
        if it >= warmup:
            times.append((t1 - t0) * 1e3)
    times.sort()
    ms = times[len(times) // 2]
    pairs = Lq * Lk if not causal else sum(Lk - Lq + i + 1 for i in range(Lq))
    gflops = 4.0 * B * Hq * D * pairs / (ms * 1e6)
    return {'B': B, 'Hq': Hq, 'Hkv': Hkv, 'Lq': Lq, 'Lk': Lk, 'D': D, 'causal': causal,
            'ms_median': ms, 'ms_min': times[0], 'gflops': gflops, 'o_sum': float(o.sum())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shape', action='append', default=[])
    ap.add_argument('--causal', action='store_true')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = [tuple(int(x) for x in s.split(',')) for s in a.shape] or [(1, 8, 8, 1024, 1024, 64)]
    out = []
    for sh in shapes:
        r = run(sh, a.causal, a.iters, a.warmup)
        out.append(r)
        print('torch %-24s %10.3f ms %8.2f GFLOP/s' % (','.join(map(str, sh)), r['ms_median'],
                                                       r['gflops']))
    if a.json:
        json.dump(out, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
