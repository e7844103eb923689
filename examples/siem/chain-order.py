#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Put audit lines exported from a SIEM back into chain order.

Shippers deliver at least once and in no guaranteed order, and a SIEM sorts
by time, not by file position. The chain itself gives the order back: the
line after L is the one whose "prev" is sha256(L). Reads raw lines (the
"raw"/"log" field, one per line) on stdin, drops exact duplicates, and
writes every chain that starts at 64 zeros (one per file, rotation or stdout
run) to OUTDIR/chain-NNN.jsonl, ready for `cibroker audit verify`. Anything
that does not hang off such a start (gaps, forks, torn records) is written
to OUTDIR/segment-NNN.jsonl or OUTDIR/unchained.txt and makes the exit 1.

  jq -r '.raw' export.json | ./chain-order.py out/ && for f in out/chain-*.jsonl; do cibroker audit verify "$f"; done
"""
import hashlib
import os
import re
import sys

ZERO = b"0" * 64
PREV = re.compile(rb'"prev":"([0-9a-f]{64})"}$')


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.stderr.write("usage: chain-order.py OUTDIR < raw-lines\n")
        return 2
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    lines = list(dict.fromkeys(l for l in sys.stdin.buffer.read().split(b"\n") if l))
    by_prev, starts, unchained, forks = {}, [], [], 0
    for line in lines:
        m = PREV.search(line)
        if not m:
            unchained.append(line)  # torn record or not a record
        elif m.group(1) == ZERO:
            starts.append(line)  # first line of a file
        elif m.group(1) in by_prev:
            forks += 1  # two different lines claim the same predecessor
            unchained.append(line)
        else:
            by_prev[m.group(1)] = line
    known = {hashlib.sha256(l).hexdigest().encode() for l in lines}
    # Lines whose predecessor is missing from the export start a gap.
    orphans = [l for p, l in by_prev.items() if p not in known]
    used = set()

    def follow(first, name):
        out = []
        cur = first
        while cur is not None and cur not in used:
            used.add(cur)
            out.append(cur)
            cur = by_prev.get(hashlib.sha256(cur).hexdigest().encode())
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(b"".join(l + b"\n" for l in out))
        return len(out)

    for i, first in enumerate(starts, 1):
        print("chain-%03d.jsonl: %d records" % (i, follow(first, "chain-%03d.jsonl" % i)))
    for i, first in enumerate(orphans, 1):
        print("segment-%03d.jsonl: %d records after a gap" % (i, follow(first, "segment-%03d.jsonl" % i)))
    unchained += [l for l in by_prev.values() if l not in used]
    if unchained:
        with open(os.path.join(outdir, "unchained.txt"), "wb") as f:
            f.write(b"".join(l + b"\n" for l in unchained))
        print("unchained.txt: %d lines (torn, forked or in a loop)" % len(unchained))
    if forks:
        print("%d lines claim a predecessor another line already claims" % forks)
    return 0 if not orphans and not unchained else 1


if __name__ == "__main__":
    sys.exit(main())
