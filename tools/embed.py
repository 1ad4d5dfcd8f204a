#!/usr/bin/env python3
"""Turn a text file into a C string literal, expanding #include "x" lines relative to the file and
marking each piece with #line so compiler logs point at the real file and line.

usage: embed.py INPUT OUTPUT NAME [--no-line]
"""
import os
import re
import sys


def expand(path, seen, lines_out, mark):
    path = os.path.normpath(path)
    if path in seen:
        return
    seen.add(path)
    base = os.path.dirname(path)
    name = os.path.basename(path)
    if mark:
        lines_out.append('#line 1 "%s"' % name)
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m:
                expand(os.path.join(base, m.group(1)), seen, lines_out, mark)
                if mark:
                    lines_out.append('#line %d "%s"' % (n + 1, name))
            else:
                lines_out.append(line.rstrip('\n'))


def main():
    src, out, name = sys.argv[1:4]
    mark = '--no-line' not in sys.argv
    lines = []
    expand(src, set(), lines, mark)
    with open(out, 'w', encoding='utf-8') as f:
        f.write('/* generated from %s by tools/embed.py */\n' % os.path.basename(src))
        f.write('static const char %s[] =\n' % name)
        for line in lines:
            esc = line.replace('\\', '\\\\').replace('"', '\\"')
            f.write('    "%s\\n"\n' % esc)
        f.write('    ;\n')


if __name__ == '__main__':
    main()
