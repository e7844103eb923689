#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""cibroker benchmark driver (see docs/benchmarks.md; run through bench/run.sh).

Everything runs on loopback: a release build of the real binary, the test
issuer fixture minting thousands of distinct RS256 ID tokens, 10,000 generated
policies, wrk with bench/exchange.lua. Each load run is sandwiched between two
`openssl speed` measurements on the broker's core, so the crypto limit is
measured in the same run and under the same background load as the broker.

Only the Python standard library is used; the tools are Debian's wrk,
openssl and (for --profile) linux-perf.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
AUDIENCE = "bench-deploy"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=2.0):
    """Tiny HTTP/1.0 GET (no dependencies, no connection reuse): (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


# ---- fixtures: policies, config, tokens ----

def bench_policy():
    """The policy every benchmark request asks for: a realistic mix of exact,
    list, glob and regex conditions, a deny list and templated claims."""
    return {
        "name": AUDIENCE,
        "description": "benchmark: deploy acme/web from main",
        "issuer": "github",
        "allow": {
            "repository": "acme/web",
            "repository_id": "89221572",
            "repository_owner_id": "5000",
            "ref": "refs/heads/main",
            "event_name": ["push", "workflow_dispatch"],
            "job_workflow_ref": "acme/web/.github/workflows/*@refs/heads/main",
            "environment": {"regex": "^production(-eu|-us)?$"},
        },
        "deny": {"actor": ["dependabot[bot]", "renovate[bot]"]},
        "credential": {
            "type": "jwt",
            "audience": "https://deploy.acme.internal",
            "ttl": "5m",
            "subject": "repo:${repository}:ref:${ref}",
            "claims": {"scope": "deploy:web", "run": "${run_id}"},
        },
    }


def filler_policy(i):
    """One of the other policies: mostly exact strings, every 10th with a glob,
    every 20th with a regex (regexes cost the most memory)."""
    allow = {
        "repository": f"org{i % 97}/svc-{i}",
        "repository_id": str(10000000 + i),
        "repository_owner_id": str(5000 + i % 97),
        "ref": "refs/heads/main",
        "event_name": ["push", "workflow_dispatch"],
    }
    if i % 10 == 0:
        allow["job_workflow_ref"] = f"org{i % 97}/svc-{i}/.github/workflows/*@refs/heads/main"
    if i % 20 == 0:
        allow["environment"] = {"regex": "^prod(-eu|-us)?$"}
    return {
        "name": f"svc-{i}-deploy",
        "issuer": "github",
        "allow": allow,
        "credential": {"type": "jwt", "audience": f"https://svc-{i}.acme.internal", "ttl": "5m",
                       "claims": {"scope": f"deploy:svc-{i}"}},
    }


def write_policies(directory, n):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "00000-bench.json"), "w") as f:
        json.dump(bench_policy(), f)
    for i in range(1, n):
        with open(os.path.join(directory, f"{i:05d}.json"), "w") as f:
            json.dump(filler_policy(i), f)


def write_config(path, port, issuer_url, key, policies, audit_path, sync, threads, jwks_refresh="1h"):
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "public_url": "https://broker.test",
        "signing": {"keys": [key]},
        "issuers": [{
            "name": "github",
            "issuer": issuer_url,
            "audiences": ["https://broker.test"],
            "algorithms": ["RS256"],
            "max_token_age": "30m",
            "jwks_min_refetch": "1s",
            "jwks_refresh": jwks_refresh,
        }],
        "policies": policies,
        "audit": {"path": audit_path, "sync": sync},
        "server": {"threads": threads, "per_ip_connections": 0},
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


# ---- crypto limit ----

def crypto_limit(cpu, seconds):
    """RS256 verify/s and ES256 sign/s on `cpu`, wall clock (-elapsed: the
    broker is measured in wall time under the same background load) and CPU
    time (the default), and the limit 1 / (1/verify + 1/sign) for both."""
    out = {}
    for mode, extra in (("wall", ["-elapsed"]), ("cpu", [])):
        cmd = ["openssl", "speed", "-mr", "-seconds", str(seconds)] + extra + ["rsa2048", "ecdsap256"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rsa = re.search(r"^\+F2:\d+:2048:([\d.]+):([\d.]+)", text, re.M)
        ec = re.search(r"^\+F4:\d+:256:([\d.]+):([\d.]+)", text, re.M)
        verify, sign = float(rsa.group(2)), float(ec.group(1))
        out[mode] = {"rs256_verify": verify, "es256_sign": sign, "limit": 1.0 / (1.0 / verify + 1.0 / sign)}
    return out


# ---- the broker ----

class Broker:
    def __init__(self, binary, config, port, cpu=None):
        self.port = port
        cmd = [binary, "serve", "--config", config]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        self.t0 = time.monotonic()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)

    def wait(self, path, timeout=20.0, interval=0.001):
        """Seconds from exec to the first 200 on `path`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise RuntimeError("cibroker exited: " + self.err.read().decode(errors="replace"))
            try:
                if http_get(self.port, path)[0] == 200:
                    return time.monotonic() - self.t0
            except OSError:
                pass
            time.sleep(interval)
        raise RuntimeError(f"cibroker: no 200 on {path} within {timeout}s")

    def status(self):
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        return fields

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self):
        return http_get(self.port, "/metrics")[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.seek(0)
        return self.err.read().decode(errors="replace")


def metric(text, name, labels=None):
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if labels is not None:
            if not rest.startswith("{") or labels not in rest:
                continue
        elif not rest.startswith(" "):
            continue
        return float(line.rsplit(" ", 1)[1])
    return 0.0


ALLOWED = 'policy="%s",outcome="allow"' % AUDIENCE


class Sampler(threading.Thread):
    """Allowed exchanges per second, from /metrics once a second, to see a dip."""

    def __init__(self, broker):
        super().__init__(daemon=True)
        self.broker, self.samples, self.stop_ev = broker, [], threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.samples.append((time.monotonic(),
                                     metric(self.broker.metrics(), "cibroker_exchanges_total", ALLOWED)))
            except OSError:
                pass
            self.stop_ev.wait(1.0)

    def rates(self):
        s = self.samples
        return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(s, s[1:]) if b[0] > a[0]]


def run_wrk(url, tokens, duration, conns, cpu, threads, ghost=None, every=0):
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency", "--timeout", "10s",
           "-s", os.path.join(HERE, "exchange.lua"), url, "--", tokens, AUDIENCE]
    if ghost:
        cmd += [ghost, str(every)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError("wrk failed: " + out.stdout + out.stderr)
    return json.loads(m.group(1))


# ---- the bench ----

class Bench:
    def __init__(self, args):
        self.a = args
        self.binary = os.path.join(args.build_dir, "cibroker")
        self.dir = tempfile.mkdtemp(prefix="cibroker-bench-", dir=args.workdir)
        self.results = []
        self.limits = []

    def setup(self):
        a = self.a
        self.key = os.path.join(self.dir, "signing.pem")
        subprocess.run([self.binary, "keygen", "--out", self.key], check=True, capture_output=True)
        self.policies = os.path.join(self.dir, "policies")
        t = time.monotonic()
        write_policies(self.policies, a.policies)
        log(f"{a.policies} policies written in {time.monotonic() - t:.1f}s")
        self.tokens = os.path.join(self.dir, "tokens.txt")
        self.ghosts = os.path.join(self.dir, "ghosts.txt")
        t = time.monotonic()
        self.issuer = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "issuer.py"), "--tokens", str(a.tokens), "--ghosts", "200",
             "--out", self.tokens, "--ghost-out", self.ghosts],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.issuer_url = self.issuer.stdout.readline().strip()
        if not self.issuer_url:
            raise RuntimeError("bench issuer did not start")
        log(f"issuer {self.issuer_url}: {a.tokens} tokens minted in {time.monotonic() - t:.1f}s")

    def teardown(self):
        if getattr(self, "issuer", None):
            self.issuer.stdin.close()
            try:
                self.issuer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.issuer.kill()
        if not self.a.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_broker(self, name, sync, threads, cpu, jwks_refresh="1h"):
        port = free_port()
        cfg = os.path.join(self.dir, f"{name}.json")
        audit = os.path.join(self.dir, f"{name}-audit.jsonl")
        write_config(cfg, port, self.issuer_url, self.key, self.policies, audit, sync, threads, jwks_refresh)
        return Broker(self.binary, cfg, port, cpu), audit

    def start_refresh_broker(self):
        """The broker of the "jwks" run, started early: its periodic refresh
        (jwks_refresh: 1m, the smallest allowed) is due 60 s after its first
        fetch, and load_run times its window so that a refresh falls inside."""
        a = self.a
        b, audit = self.new_broker("jwks", "none", a.threads_none, a.broker_cpu, "1m")
        b.wait("/readyz")
        self.refresh_broker = (b, audit, time.monotonic())

    def issuer_counts(self):
        import urllib.request
        with urllib.request.urlopen(self.issuer_url + "/control/counts", timeout=5) as r:
            return json.load(r)

    def startup(self, n):
        times = []
        for i in range(n):
            b, audit = self.new_broker(f"startup{i}", "none", 2, self.a.broker_cpu)
            try:
                times.append(b.wait("/healthz"))
            finally:
                b.stop()
            os.unlink(audit) if os.path.exists(audit) else None
        return times

    def load_run(self, name, sync, threads, pinned, ghosts=False):
        a = self.a
        bcpu, wcpu = (a.broker_cpu, a.wrk_cpu) if pinned else (None, None)
        limit_before = self.limits[-1] if self.limits else crypto_limit(a.broker_cpu, a.speed_seconds)
        if name == "jwks":
            b, audit, fetched = self.refresh_broker
        else:
            b, audit = self.new_broker(name, sync, threads, bcpu)
        row = {"name": name, "sync": sync, "threads": threads, "pinned": pinned}
        try:
            b.wait("/readyz")
            url = f"http://127.0.0.1:{b.port}"
            if name == "jwks":
                # Put the next periodic refresh in the middle of the window.
                lead = a.warmup + a.duration / 2 + 0.5
                due = fetched + 60
                while due - time.monotonic() < lead:
                    due += 60
                log(f"jwks: waiting {due - lead - time.monotonic():.0f}s so a periodic refresh falls mid-run")
                time.sleep(max(0.0, due - lead - time.monotonic()))
            run_wrk(url, self.tokens, a.warmup, a.connections, wcpu, 1 if pinned else 2)
            jwks_before = self.issuer_counts().get("/jwks", 0)
            m0 = b.metrics()
            cpu0 = b.cpu_seconds()
            sampler = Sampler(b)
            sampler.start()
            perf = None
            if a.profile:
                perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "--call-graph",
                                         a.call_graph, "-p", str(b.proc.pid), "-o", f"{a.profile}.{name}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif a.syscalls:
                perf = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(b.proc.pid),
                                         "-o", f"{a.syscalls}.{name}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            w = run_wrk(url, self.tokens, a.duration, a.connections, wcpu, 1 if pinned else 2,
                        self.ghosts if ghosts else None, a.ghost_every)
            sampler.stop_ev.set()
            sampler.join()
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait()
            cpu1 = b.cpu_seconds()
            m1 = b.metrics()
            st = b.status()
            jwks_after = self.issuer_counts().get("/jwks", 0)
        finally:
            stderr = b.stop()
        limit_after = crypto_limit(a.broker_cpu, a.speed_seconds)
        self.limits.append(limit_after)
        secs = w["duration_us"] / 1e6
        allowed = metric(m1, "cibroker_exchanges_total", ALLOWED) - metric(m0, "cibroker_exchanges_total", ALLOWED)
        batches = metric(m1, "cibroker_audit_batches_total") - metric(m0, "cibroker_audit_batches_total")
        records = metric(m1, "cibroker_audit_records_total") - metric(m0, "cibroker_audit_records_total")
        ok = w["requests"] - w["non2xx"]
        wall = (limit_before["wall"]["limit"] + limit_after["wall"]["limit"]) / 2
        cpu_lim = None
        if "cpu" in limit_before and "cpu" in limit_after:
            cpu_lim = (limit_before["cpu"]["limit"] + limit_after["cpu"]["limit"]) / 2
        rates = sampler.rates()[1:-1] or sampler.rates()
        row.update({
            "exchanges_per_s": ok / secs,
            "allowed_audited": allowed,
            "non2xx": w["non2xx"],
            "socket_errors": w["connect_err"] + w["read_err"] + w["write_err"] + w["timeouts"],
            "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000, "max_ms": w["max_us"] / 1000,
            "limit_wall": wall,
            "ratio": (ok / secs) / wall,
            "broker_cpu_s": cpu1 - cpu0,
            "exchanges_per_cpu_s": ok / (cpu1 - cpu0) if cpu1 > cpu0 else 0.0,
            "limit_cpu": cpu_lim,
            "ratio_cpu": (ok / (cpu1 - cpu0)) / cpu_lim if cpu_lim and cpu1 > cpu0 else None,
            "vmhwm_mib": int(st["VmHWM"].split()[0]) / 1024,
            "vmrss_mib": int(st["VmRSS"].split()[0]) / 1024,
            "threads_os": int(st["Threads"]),
            "records_per_batch": records / batches if batches else None,
            "jwks_fetches": jwks_after - jwks_before,
            "per_second_min": min(rates) if rates else None,
            "per_second_median": statistics.median(rates) if rates else None,
        })
        if a.syscalls and allowed:
            per = strace_counts(f"{a.syscalls}.{name}")
            row["syscalls_per_exchange"] = {k: v / allowed for k, v in per.items()}
            log(f"{name}: system calls per exchange: " +
                ", ".join(f"{k} {v / allowed:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:10]))
        if self.a.verify_audit:
            v = subprocess.run([self.binary, "audit", "verify", audit], capture_output=True, text=True)
            row["audit_verify"] = v.returncode == 0
        if os.path.exists(audit):
            os.unlink(audit)
        if " error:" in stderr:
            log(f"{name}: broker stderr: {stderr.strip()[-500:]}")
        log(f"{name}: {row['exchanges_per_s']:.0f}/s, limit {wall:.0f}/s, ratio {row['ratio']:.2f}, "
            f"CPU ratio {fmt(row['ratio_cpu'], '.2f')}, p99 {row['p99_ms']:.2f} ms, HWM {row['vmhwm_mib']:.1f} MiB, "
            f"records/batch {fmt(row['records_per_batch'], '.1f')}")
        self.results.append(row)
        return row


def strace_counts(path):
    """{syscall: calls} from an `strace -c` summary."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls = [p for p in parts[3:-1] if p.isdigit()]
                if calls:
                    counts[parts[-1]] = int(calls[0])
    return counts


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def report(bench, startup, args):
    r = {x["name"]: x for x in bench.results}
    lines = []
    lim = bench.limits
    lines.append(f"cibroker benchmark: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
                 f"{args.policies} policies, {args.tokens} distinct tokens, {args.connections} connections, "
                 f"{args.duration}s per run")
    lines.append("")
    lines.append("| run | exchanges/s | crypto limit/s | ratio | per CPU-s | limit/CPU-s | CPU ratio | p50 ms | p99 ms "
                 "| HWM MiB | recs/batch | min/median 1-s rate |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in bench.results:
        dip = (x["per_second_min"] / x["per_second_median"]) if x["per_second_min"] and x["per_second_median"] \
            else None
        label = f"{x['name']} (sync {x['sync']}, {x['threads']} thr, {'pinned' if x['pinned'] else 'both cores'})"
        lines.append(
            f"| {label} | {x['exchanges_per_s']:.0f} | {x['limit_wall']:.0f} | {x['ratio']:.2f} | "
            f"{x['exchanges_per_cpu_s']:.0f} | {fmt(x['limit_cpu'], '.0f')} | {fmt(x['ratio_cpu'], '.2f')} | "
            f"{x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['vmhwm_mib']:.1f} | {fmt(x['records_per_batch'], '.1f')} | "
            f"{fmt(dip, '.2f')} |")
    lines.append("")
    s_ms = sorted(t * 1000 for t in startup)
    if s_ms:
        lines.append(f"Start-up to first `/healthz` 200 with {args.policies} policies: median "
                     f"{statistics.median(s_ms):.0f} ms (min {s_ms[0]:.0f}, max {s_ms[-1]:.0f}, {len(s_ms)} starts)")
    else:
        lines.append("Start-up not measured (--startups 0).")
    lines.append("")
    lines.append("| target (issue 10) | measured | met |")
    lines.append("|---|---|---|")

    def target(name, value, ok):
        lines.append(f"| {name} | {value} | {'yes' if ok else '**no**'} |")

    if "none" in r:
        x = r["none"]
        target("≥ 0.75 × crypto limit, sync none", f"{x['ratio']:.2f} (CPU-normalised {fmt(x['ratio_cpu'], '.2f')})",
               x["ratio"] >= 0.75)
        target("p99 ≤ 5 ms at 32 connections, sync none", f"{x['p99_ms']:.2f} ms", x["p99_ms"] <= 5)
    if "always" in r:
        x = r["always"]
        target("≥ 0.6 × crypto limit, sync always", f"{x['ratio']:.2f} (CPU-normalised {fmt(x['ratio_cpu'], '.2f')})",
               x["ratio"] >= 0.6)
        target("p99 ≤ 5 ms at 32 connections, sync always", f"{x['p99_ms']:.2f} ms", x["p99_ms"] <= 5)
    hwm = max(x["vmhwm_mib"] for x in bench.results)
    target(f"RSS ≤ 32 MiB under load, {args.policies} policies", f"{hwm:.1f} MiB (VmHWM, worst run)", hwm <= 32)
    if s_ms:
        target(f"start-up < 200 ms, {args.policies} policies", f"{statistics.median(s_ms):.0f} ms",
               statistics.median(s_ms) < 200)
    if "jwks" in r and "none" in r:
        x, base = r["jwks"], r["none"]

        def steadiness(row):
            return row["per_second_min"] / row["per_second_median"] if row["per_second_min"] and \
                row["per_second_median"] else 0.0

        cpu_ok = not (x["ratio_cpu"] and base["ratio_cpu"]) or x["ratio_cpu"] >= 0.9 * base["ratio_cpu"]
        target("no dip while a JWKS refresh runs",
               f"{x['jwks_fetches']} periodic JWKS fetch(es) inside the window; slowest second "
               f"{steadiness(x):.2f} × median (run without refresh: {steadiness(base):.2f}); per CPU-s "
               f"{x['exchanges_per_cpu_s']:.0f} vs {base['exchanges_per_cpu_s']:.0f}",
               x["jwks_fetches"] > 0 and steadiness(x) >= steadiness(base) - 0.1 and cpu_ok)
    lines.append("")
    lines.append("Crypto limit on the broker's core (openssl speed, RS256 verify/s, ES256 sign/s, wall | CPU):")
    for i, L in enumerate(lim):
        c = L.get("cpu")
        lines.append(f"- sample {i}: wall {L['wall']['rs256_verify']:.0f} / {L['wall']['es256_sign']:.0f} → "
                     f"{L['wall']['limit']:.0f}/s" + (f"; CPU {c['rs256_verify']:.0f} / {c['es256_sign']:.0f} → "
                                                   f"{c['limit']:.0f}/s" if c else ""))
    bad = [x["name"] for x in bench.results if x.get("audit_verify") is False]
    if args.verify_audit:
        lines.append("")
        lines.append("Audit chains verified after every run: " + ("all intact" if not bad else "BROKEN: " +
                                                                  ", ".join(bad)))
    errs = [f"{x['name']}: {x['socket_errors']}" for x in bench.results if x["socket_errors"]]
    if errs:
        lines.append("Socket errors: " + ", ".join(errs))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--smoke", action="store_true", help="a few seconds: tiny numbers, no targets")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--policies", type=int, default=10000)
    ap.add_argument("--threads-none", type=int, default=1,
                    help="server.threads per CPU the broker runs on, with sync none (a worker never waits "
                         "for the disk there, so one per core: more only preempt each other)")
    ap.add_argument("--threads-always", type=int, default=4,
                    help="server.threads per CPU the broker runs on, with sync always (the broker's default; "
                         "a connection waiting for its fdatasync is parked, its worker serves others)")
    ap.add_argument("--speed-seconds", type=int, default=2)
    ap.add_argument("--broker-cpu", type=int, default=0)
    ap.add_argument("--wrk-cpu", type=int, default=1)
    ap.add_argument("--ghost-every", type=int, default=500,
                    help="in the jwks run, every Nth request carries an unknown kid")
    ap.add_argument("--startups", type=int, default=5)
    ap.add_argument("--runs", default="none,always,both,jwks",
                    help="comma list of: none always both both-always jwks refetch")
    ap.add_argument("--workdir", default=None, help="where the audit logs go (must be a real disk for fsync)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-verify-audit", dest="verify_audit", action="store_false")
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--profile", metavar="PREFIX",
                    help="perf record (cpu-clock) the broker during each run into PREFIX.RUN")
    ap.add_argument("--syscalls", metavar="PREFIX",
                    help="count the broker's system calls (strace -c -f) during each run into PREFIX.RUN; "
                         "slows the broker down, so only the counts per exchange mean anything")
    ap.add_argument("--call-graph", default="dwarf", help="perf --call-graph mode (dwarf or fp)")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.tokens, args.policies = 2, 1, 200, 200
        args.speed_seconds, args.startups, args.runs = 1, 1, "none,always"
    if args.workdir is None:
        args.workdir = args.build_dir
    args.workdir = os.path.abspath(args.workdir)
    for tool in ("wrk", "openssl", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (run ./bootstrap.sh)")
    if (os.cpu_count() or 1) < 2:
        log("only one CPU: broker and wrk share it, ratios will be low")
        args.wrk_cpu = 0

    b = Bench(args)
    try:
        b.setup()
        if "jwks" in args.runs.split(","):
            b.start_refresh_broker()
        startup = b.startup(args.startups)
        log("start-up ms: " + ", ".join(f"{t * 1000:.0f}" for t in startup))
        b.limits.append(crypto_limit(args.broker_cpu, args.speed_seconds))
        plan = {
            "none": ("none", args.threads_none, True, False),
            "always": ("always", args.threads_always, True, False),
            "both": ("none", args.threads_none * (os.cpu_count() or 1), False, False),
            "both-always": ("always", args.threads_always * (os.cpu_count() or 1), False, False),
            "jwks": ("none", args.threads_none, True, False),
            "refetch": ("none", args.threads_none, True, True),
        }
        for name in args.runs.split(","):
            sync, threads, pinned, ghosts = plan[name]
            b.load_run(name, sync, threads, pinned, ghosts)
        text = report(b, startup, args)
    finally:
        b.teardown()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
