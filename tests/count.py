# SPDX-License-Identifier: Apache-2.0
"""Sums the test cases of every meson test run in the given build dirs.

Each test program ends with "N passed, N failed" (C unit tests via check.h,
Python tests via harness.main, shell tests by hand); a program that crashed
before printing it counts as one failure, a skipped one (exit 77) as skipped.
Prints per-program counts and the final total line."""
import json
import os
import re
import sys

LINE = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")
passed = failed = skipped = 0
for d in sys.argv[1:]:
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    with open(log) as f:
        for raw in f:
            t = json.loads(raw)
            p = fl = sk = 0
            found = False
            for line in (t.get("stdout") or "").splitlines()[::-1]:
                m = LINE.match(line.strip())
                if m:
                    p, fl, sk = int(m[1]), int(m[2]), int(m[3] or 0)
                    found = True
                    break
            res = t.get("result")
            if res == "SKIP":
                p, fl, sk = 0, 0, max(sk, 1)
            elif not found:
                p, fl = (1, 0) if res in ("OK", "EXPECTEDFAIL") else (0, 1)
            elif res not in ("OK", "EXPECTEDFAIL") and fl == 0:
                fl = 1  # a crash or leak after the summary line is a failure
            print(f"{d}/{t['name']}: {p} passed, {fl} failed" + (f", {sk} skipped" if sk else ""))
            passed += p
            failed += fl
            skipped += sk
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
