#!/usr/bin/env python3
"""Turn `ssmax bench --json` files into an SVG bar chart of GFLOP/s per shape and device, so
results from different machines and vendors can be compared by looking. No dependencies.

usage: bench/plot.py OUT.svg RESULTS.json [MORE.json ...]"""
import html
import json
import sys

COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7']


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    recs = []
    for f in sys.argv[2:]:
        recs += json.load(open(f))
    if not recs:
        print('no records')
        return 1
    shape = lambda r: 'B%d H%d/%d Lq%d Lk%d D%d%s %s' % (
        r['B'], r['Hq'], r['Hkv'], r['Lq'], r['Lk'], r['D'], ' causal' if r['causal'] else '',
        r['dtype'])
    shapes, devs = [], []
    for r in recs:
        if shape(r) not in shapes:
            shapes.append(shape(r))
        dv = '%s (%s)' % (r['device'], r['backend'])
        if dv not in devs:
            devs.append(dv)
    val = {(shape(r), '%s (%s)' % (r['device'], r['backend'])): r['gflops'] for r in recs}
    top = max(val.values()) or 1
    bar, gap, left, width = 14, 10, 260, 520
    rows = len(shapes) * (len(devs) * bar + gap)
    h = rows + 60 + 18 * len(devs)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (left + width + 80, h),
           '<text x="10" y="16" font-size="14">ssmax bench: GFLOP/s (higher is better)</text>']
    y = 30
    for s in shapes:
        out.append('<text x="10" y="%d">%s</text>' % (y + len(devs) * bar / 2 + 4, html.escape(s)))
        for k, dv in enumerate(devs):
            v = val.get((s, dv))
            if v is None:
                continue
            w = max(1, width * v / top)
            out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
                left, y + k * bar, w, bar - 2, COLORS[k % len(COLORS)]))
            out.append('<text x="%.1f" y="%d">%.2f</text>' % (left + w + 4, y + k * bar + bar - 4, v))
        y += len(devs) * bar + gap
    for k, dv in enumerate(devs):
        out.append('<rect x="10" y="%d" width="12" height="12" fill="%s"/>' % (y + 18 * k,
                                                                           COLORS[k % len(COLORS)]))
        out.append('<text x="28" y="%d">%s</text>' % (y + 18 * k + 10, html.escape(dv)))
    out.append('</svg>')
    open(sys.argv[1], 'w').write('\n'.join(out) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
