#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Instructions per exchange, counted by callgrind (docs/benchmarks.md).

Wall-clock benchmarks on the shared development machines move by 10-20 %
between runs; an instruction count does not. This runs `cibroker serve`
(release build, one server thread, `audit.sync: none`) under
`valgrind --tool=callgrind`, warms it up, zeroes the counters, drives N
allowed exchanges over one keep-alive connection, dumps the counters and
prints user-space instructions per exchange. Kernel work (loopback TCP,
write()) is not counted: callgrind sees user space only.

    bench/callgrind.py [--build-dir build-bench] [-n 200] [--keep-out FILE]

With --keep-out the callgrind file is kept for callgrind_annotate
(`callgrind_annotate --inclusive=yes FILE | head -60`).
"""

import argparse
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench import AUDIENCE, free_port, http_get, write_config, write_policies  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(HERE), "build-bench"))
    ap.add_argument("-n", type=int, default=200, help="measured exchanges")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--keep-out", help="keep the callgrind output file here")
    a = ap.parse_args()

    binary = os.path.join(a.build_dir, "cibroker")
    work = tempfile.mkdtemp(prefix="cibroker-callgrind-")
    issuer = broker = None
    try:
        key = os.path.join(work, "signing.pem")
        subprocess.run([binary, "keygen", "--out", key], check=True, capture_output=True)
        write_policies(os.path.join(work, "policies"), a.policies)
        tokens = os.path.join(work, "tokens.txt")
        issuer = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "issuer.py"), "--tokens", str(a.n + a.warmup), "--out", tokens],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        issuer_url = issuer.stdout.readline().strip()
        port = free_port()
        cfg = os.path.join(work, "config.json")
        write_config(cfg, port, issuer_url, key, os.path.join(work, "policies"), os.path.join(work, "audit.jsonl"),
                     "none", 1)
        out = os.path.join(work, "callgrind.out")
        broker = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "serve",
                                   "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if http_get(port, "/readyz", timeout=10)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or broker.poll() is not None:
                raise RuntimeError("broker did not become ready under valgrind")
            time.sleep(0.2)
        with open(tokens) as f:
            toks = [t.strip() for t in f if t.strip()]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def exchange(tok):
            body = urllib.parse.urlencode({
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": tok,
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                "audience": AUDIENCE,
            })
            conn.request("POST", "/v1/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"exchange failed: {r.status} {data!r}")

        for t in toks[:a.warmup]:
            exchange(t)
        subprocess.run(["callgrind_control", "-z", str(broker.pid)], check=True, capture_output=True)
        for t in toks[a.warmup:a.warmup + a.n]:
            exchange(t)
        subprocess.run(["callgrind_control", "-d", "measured", str(broker.pid)], check=True, capture_output=True)
        conn.close()
        dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        with open(dumps[-1]) as f:
            text = f.read()
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        ir = int(m.group(1))
        print(f"exchanges: {a.n}")
        print(f"instructions: {ir}")
        print(f"instructions per exchange: {ir / a.n:.0f}")
        if a.keep_out:
            shutil.copy(dumps[-1], a.keep_out)
    finally:
        if broker and broker.poll() is None:
            broker.terminate()
            try:
                broker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                broker.kill()
        if issuer:
            issuer.stdin.close()
            try:
                issuer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                issuer.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
