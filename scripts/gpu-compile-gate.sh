#!/bin/sh
# The GPU compiler gate: every pipeline the planner can choose, compiled by AMD's real shader
# compiler (ACO, through RADV's null hardware: RADV_FORCE_FAMILY on a machine without that GPU)
# for several GPU generations. Fails when a pipeline does not build, when one spills registers
# (Spilled VGPRs or Spilled SGPRs > 0), or when a workgroup is not a whole number of the
# subgroups it runs with. Writes one markdown table per family, one row a pipeline, to
# bench/results/radv-null-DATE.md (or --out FILE).
#
# usage: scripts/gpu-compile-gate.sh [--allow-partial-subgroups] [--allow-missing] [--out FILE]
#                                    [--build DIR]
#   --allow-partial-subgroups  do not fail on a workgroup that is not a whole number of
#                              subgroups (each pipeline's answer is printed either way)
#   --allow-missing           RADV's null hardware not listed (no RADV driver): skip, exit 0
#   --build DIR               the meson build folder with the ssmax tool (default build)
set -eu
cd "$(dirname "$0")/.."
full=1 missing=0 build=build out=
while [ $# -gt 0 ]; do
    case "$1" in
    --allow-partial-subgroups) full=0 ;;
    --allow-missing) missing=1 ;;
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "gpu-compile-gate: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
ssmax=$build/ssmax
[ -x "$ssmax" ] || { echo "gpu-compile-gate: $ssmax not built" >&2; exit 2; }
[ -n "$out" ] || out=bench/results/radv-null-$(date +%Y-%m-%d).md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# gfx1100 (navi31) crashes this Mesa's null winsys: not in the list.
families="navi21 navi10 rembrandt vega10 polaris10"
rc=0
for fam in $families; do
    RADV_FORCE_FAMILY=$fam "$ssmax" devices --json > "$tmp/$fam-devices.json"
    spec=$(/usr/bin/python3 -c '
import json, sys
for d in json.load(open(sys.argv[1])):
    if d["backend"] == "vulkan" and d["compile_only"] and d["name"].startswith("Null hardware"):
        print(d["spec"]); break' "$tmp/$fam-devices.json")
    if [ -z "$spec" ]; then
        echo "gpu-compile-gate: $fam: RADV's null hardware is not listed (is RADV installed?" \
             "Debian: mesa-vulkan-drivers)" >&2
        [ $missing = 1 ] && continue
        rc=1
        continue
    fi
    echo "== $fam: $spec"
    prc=0
    RADV_FORCE_FAMILY=$fam "$ssmax" pipelines --device "$spec" --json "$tmp/$fam.json" \
        > "$tmp/$fam.log" || prc=$?
    if [ $prc != 0 ] && [ ! -s "$tmp/$fam.json" ]; then
        cat "$tmp/$fam.log"
        echo "gpu-compile-gate: $fam: ssmax pipelines exited $prc" >&2
        rc=1
        continue
    fi
    [ $prc = 0 ] || rc=1
done
/usr/bin/python3 - "$tmp" "$out" "$full" $families <<'PY' || rc=1
import datetime, json, os, sys
tmp, out, full, fams = sys.argv[1], sys.argv[2], sys.argv[3] == '1', sys.argv[4:]
bad = []
md = []
mesa = None
for fam in fams:
    path = os.path.join(tmp, fam + '.json')
    if not os.path.exists(path):
        continue
    devs = json.load(open(os.path.join(tmp, fam + '-devices.json')))
    dev = next(d for d in devs if d['compile_only'] and d['name'].startswith('Null hardware'))
    mesa = mesa or dev['driver_version']
    md += ['', '## %s: %s' % (fam, dev['name']), '',
           '| kernel | case | dtype | D | q_per_kv | workgroup | subgroup | whole subgroups | VGPRs '
           '| SGPRs | spills (V/S) | LDS | Subgroups per SIMD | instructions |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in json.load(open(path)):
        where = '%s %s %s D%d g%d' % (fam, r['case'], r['dtype'], r['head_dim'], r['q_per_kv'])
        if r.get('error'):
            bad.append('%s: build failed: %s' % (where, r['error']))
            md.append('| FAILED | %s | %s | %d | %d | %s |' % (r['case'], r['dtype'], r['head_dim'],
                      r['q_per_kv'], r['error'].replace('|', '/')))
            continue
        s = r['stats'] or {}
        sv, ss = s.get('Spilled VGPRs'), s.get('Spilled SGPRs')
        where += ' ' + r['kernel']
        if r['stats'] is None:
            bad.append('%s: the driver reported no statistics' % where)
        if (sv or 0) > 0 or (ss or 0) > 0:
            bad.append('%s: spills %s VGPRs, %s SGPRs' % (where, sv, ss))
        whole = r['whole_subgroups']
        print('%-44s workgroup %4d, subgroup %2d: %s' % (where, r['workgroup_size'],
              r['subgroup_size'], 'whole subgroups' if whole else 'NOT a whole number of subgroups'))
        if full and not whole:
            bad.append('%s: workgroup %d is not a whole number of %d-wide subgroups' %
                       (where, r['workgroup_size'], r['subgroup_size']))
        g = lambda k: '' if s.get(k) is None else str(s[k])
        md.append('| %s | %s | %s | %d | %d | %d | %d | %s | %s | %s | %s/%s | %s | %s | %s |' % (
            r['kernel'], r['case'], r['dtype'], r['head_dim'], r['q_per_kv'], r['workgroup_size'],
            r['subgroup_size'], 'yes' if whole else 'no', g('VGPRs'), g('SGPRs'), g('Spilled VGPRs'),
            g('Spilled SGPRs'), g('LDS size'), g('Subgroups per SIMD'), g('Instructions')))
if mesa:
    head = ['# RADV null hardware: pipeline statistics', '',
            'Date: %s. Driver: %s. Generated by scripts/gpu-compile-gate.sh (`ssmax pipelines` '
            'under RADV_FORCE_FAMILY; ACO compiles, nothing runs).' %
            (datetime.date.today().isoformat(), mesa), '',
            'LDS size in bytes; Subgroups per SIMD is the occupancy ACO reports.']
    with open(out + '.tmp', 'w') as f:
        f.write('\n'.join(head + md) + '\n')
    os.replace(out + '.tmp', out)
    print('gpu-compile-gate: table written to %s' % out)
for b in bad:
    print('gpu-compile-gate: FAIL %s' % b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
[ $rc = 0 ] && echo "gpu-compile-gate: ok" || echo "gpu-compile-gate: FAILED" >&2
exit $rc
