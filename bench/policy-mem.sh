#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Memory and start-up of the policy set (issue 10: under 200 ms to the first
# /healthz 200 and under 32 MiB RSS with 10,000 policies loaded).
# Writes the same 10,000 one-policy JSON files as bench/bench.py (every 10th
# with a glob, every 20th with a regex), then prints:
#   - `policy check`: wall/CPU time and peak RSS (/usr/bin/time);
#   - `serve`: time from exec to the first 200 on /healthz (median of RUNS
#     starts; the issuer's JWKS URL is a closed loopback port, so key fetches
#     are excluded as the issue asks) and the broker's VmHWM/VmRSS then.
# No assertion: machines differ, so this is not a test.
# usage: bench/policy-mem.sh [CIBROKER] [N] [RUNS]   (KEEP=1 keeps the temp dir)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cibroker=${1:-build/cibroker}
n=${2:-10000}
runs=${3:-5}
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT INT TERM
umask 077
"$cibroker" keygen --out "$tmp/signing.pem" >/dev/null
exec /usr/bin/python3 - "$here" "$cibroker" "$n" "$runs" "$tmp" <<'PY'
import os, statistics, subprocess, sys, time
here, binary, n, runs, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, here)
import bench  # noqa: E402  (write_policies, write_config, Broker, free_port)

pol = os.path.join(tmp, "policies")
bench.write_policies(pol, n)
cfg = os.path.join(tmp, "config.json")
port = bench.free_port()
bench.write_config(cfg, port, "http://127.0.0.1:9", os.path.join(tmp, "signing.pem"), pol,
                   os.path.join(tmp, "audit.jsonl"), "none", 2)

r = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", binary, "policy", "check", "--config", cfg],
                   capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("policy check failed:\n" + r.stderr[-2000:])
wall, user, sys_, kib = r.stderr.strip().splitlines()[-1].split()
print(f"policy check of {n} policies: {float(wall) * 1000:.0f} ms wall, {float(user) * 1000:.0f} ms user, "
      f"{float(sys_) * 1000:.0f} ms system, {int(kib) / 1024:.1f} MiB max RSS")

times, hwm, rss = [], [], []
for i in range(runs):
    port = bench.free_port()
    bench.write_config(cfg, port, "http://127.0.0.1:9", os.path.join(tmp, "signing.pem"), pol,
                       os.path.join(tmp, "audit.jsonl"), "none", 2)
    b = bench.Broker(binary, cfg, port)
    try:
        times.append(b.wait("/healthz") * 1000)
        st = b.status()
        hwm.append(int(st["VmHWM"].split()[0]) / 1024)
        rss.append(int(st["VmRSS"].split()[0]) / 1024)
    finally:
        b.proc.terminate()
        b.proc.wait(timeout=20)
print(f"serve start to /healthz 200 with {n} policies: median {statistics.median(times):.0f} ms "
      f"({min(times):.0f}-{max(times):.0f}, {runs} starts); VmHWM {max(hwm):.1f} MiB, VmRSS {max(rss):.1f} MiB")
PY
