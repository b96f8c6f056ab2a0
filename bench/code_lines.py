#!/usr/bin/env python3
"""Code footprint per request from a callgrind dump made with --dump-instr=yes.

Counts the 64-byte lines of machine code whose instructions ran at least MIN times
(bench/instructions.sh passes half its request count: code that runs in most requests),
by object file. On loopback the kernel's TCP work between two requests evicts most of
the first-level caches, so each of these lines is fetched again for every request: a
deterministic stand-in for the instruction-cache misses this VM cannot count.
Usage: code_lines.py CALLGRIND_OUT MIN
"""
import collections
import re
import sys


def main():
    path, min_count = sys.argv[1], int(sys.argv[2])
    objects = {}
    ob, last, skip_next = None, 0, False
    counts = collections.defaultdict(int)  # (object, address) -> times run
    with open(path, errors="replace") as f:
        for line in f:
            if line[0] in "0123456789+-*":
                parts = line.split()
                pos = parts[0]
                if pos == "*":
                    addr = last
                elif pos[0] in "+-":
                    addr = last + int(pos, 0)
                else:
                    addr = int(pos, 0)
                last = addr
                if skip_next:  # the line after calls= is the call's inclusive cost
                    skip_next = False
                elif len(parts) > 2:  # "positions: instr line", then the count
                    counts[(ob, addr)] += int(parts[-1])
            elif line.startswith("ob="):
                m = re.match(r"ob=\((\d+)\)(?: (.*))?", line.strip())
                if m.group(2):
                    objects[m.group(1)] = m.group(2)
                ob = objects.get(m.group(1), m.group(1))
            elif line.startswith("cob="):
                m = re.match(r"cob=\((\d+)\)(?: (.*))?", line.strip())
                if m and m.group(2):
                    objects[m.group(1)] = m.group(2)
            elif line.startswith("calls="):
                skip_next = True
    lines = collections.defaultdict(int)
    for (obj, addr), n in counts.items():
        key = (obj, addr // 64)
        lines[key] = max(lines[key], n)
    hot = collections.Counter(obj for (obj, _), n in lines.items() if n >= min_count)
    total = sum(hot.values())
    by_object = ", ".join(f"{n} {obj.rsplit('/', 1)[-1]}" for obj, n in hot.most_common())
    print(f"{total} lines ({total * 64 // 1024} KB): {by_object}")


if __name__ == "__main__":
    main()
