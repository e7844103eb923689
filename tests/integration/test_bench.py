# SPDX-License-Identifier: Apache-2.0
"""The benchmark still runs: `bench/bench.py --smoke` against the binary under
test (loopback issuer, wrk, openssl speed), so bench/ cannot rot between the
load runs people do by hand. Nothing here is timed: it checks that the
report has its rows, that exchanges were served, and that every run's audit
chain verified."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN, REPO, main


class BenchSmokeTest(unittest.TestCase):
    def test_smoke_run_reports_every_row(self):
        for tool in ("wrk", "openssl", "taskset"):
            if not shutil.which(tool):
                self.skipTest(f"{tool} not installed (./bootstrap.sh installs it)")
        work = tempfile.mkdtemp(prefix="cibroker-bench-")
        self.addCleanup(shutil.rmtree, work, True)
        report = os.path.join(work, "report.md")
        out = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "bench", "bench.py"), "--smoke",
                              "--build-dir", os.path.dirname(os.path.abspath(BIN)), "--workdir", work,
                              "--out", report], capture_output=True, text=True, timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        with open(report) as f:
            text = f.read()
        rows = dict(re.findall(r"^\| (none|always) \(sync \w+[^|]*\| (\d+) \|", text, re.M))
        self.assertEqual(set(rows), {"none", "always"}, text)
        for name, rate in rows.items():
            self.assertGreater(int(rate), 0, f"{name}: no exchange served\n{text}")
        self.assertIn("Audit chains verified after every run: all intact", text)
        self.assertNotIn("Socket errors", text)
        self.assertIn("| target (issue 10) | measured | met |", text)


if __name__ == "__main__":
    main()
