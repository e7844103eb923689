# SPDX-License-Identifier: Apache-2.0
"""A short valgrind-clean run of the real `cibroker serve`: start it under
memcheck with a loopback issuer, answer one exchange of each kind (allow,
deny, invalid_grant, 413, single-use replay, metrics, readiness), stop it with
SIGTERM and require exit status 0. valgrind's --error-exitcode=99 turns any
invalid read/write, use of uninitialised memory or definitely-lost block into
status 99, so a 0 means the whole lifecycle (config load, JWKS fetch, verify,
mint, audit, drain, teardown) is clean.

Skipped (loudly) when valgrind is not installed, or when CIBROKER_BIN is an
ASan build (the two cannot run together; the ASan run covers that build)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

import requests

from harness import BIN, Broker, Issuer, free_port, github_issuer_config, jwt_policy, main

READY_TIMEOUT = 60  # memcheck runs the broker 20-50x slower
STOP_TIMEOUT = 90


def asan_build(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"libasan.so" in data


class ValgrindRun(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.valgrind = shutil.which("valgrind")
        if not cls.valgrind:
            print("\n*** SKIPPING the valgrind run: valgrind is not installed (apt-get install valgrind) ***\n",
                  file=sys.stderr, flush=True)
            raise unittest.SkipTest("valgrind not installed")
        if asan_build(BIN):
            print(f"\n*** SKIPPING the valgrind run: {BIN} is an ASan build; valgrind cannot run it ***\n",
                  file=sys.stderr, flush=True)
            raise unittest.SkipTest("ASan build")
        cls.issuer = Issuer().start()

    @classmethod
    def tearDownClass(cls):
        cls.issuer.stop()

    def start_under_valgrind(self, b):
        """harness.Broker writes the config and keys; the process is started
        here so valgrind can wrap it."""
        self.vg_log = os.path.join(b.dir, "valgrind.log")
        cmd = [self.valgrind, "--quiet", "--error-exitcode=99", "--leak-check=full",
               "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "--track-origins=yes",
               "--num-callers=30", f"--log-file={self.vg_log}", BIN, "serve", "--config", b.config_path]
        b.stderr = open(b.stderr_path, "w")
        b.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=b.stderr, env=b.env)
        deadline = time.time() + READY_TIMEOUT
        while time.time() < deadline:
            if b.proc.poll() is not None:
                self.fail(f"cibroker under valgrind exited {b.proc.returncode}:\n{b.log()}\n{self.vg_report()}")
            try:
                if requests.get(b.url + "/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        b.proc.kill()
        b.proc.wait()
        self.fail(f"cibroker under valgrind not ready within {READY_TIMEOUT}s:\n{b.log()}")

    def stop_under_valgrind(self, b):
        """SIGTERM, as an orchestrator stops it: drain, free, exit 0."""
        b.proc.send_signal(signal.SIGTERM)
        try:
            rc = b.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()
            rc = "killed after timeout"
        b.stderr.close()
        return rc

    def vg_report(self):
        try:
            with open(self.vg_log) as f:
                return f.read()
        except OSError:
            return "(no valgrind log)"

    def test_lifecycle_is_clean(self):
        b = Broker([github_issuer_config(self.issuer, single_use=True)], [jwt_policy()],
                   extra={"rate_limits": {"per_ip": {"rate": 100, "burst": 100}}})
        self.addCleanup(shutil.rmtree, b.dir, True)
        self.start_under_valgrind(b)
        try:
            tok = self.issuer.mint()
            r = b.exchange(tok, "web-deploy-prod")
            self.assertEqual(r.status_code, 200, r.text)
            self.assertIn("access_token", r.json())
            r = b.exchange(tok, "web-deploy-prod")  # single use: the replay is refused
            self.assertEqual((r.status_code, r.json()["error"]), (400, "invalid_grant"), r.text)
            r = b.exchange(self.issuer.mint({"ref": "refs/heads/feature"}), "web-deploy-prod")
            self.assertEqual((r.status_code, r.json()["error"]), (403, "access_denied"), r.text)
            r = b.exchange(tok[:-4] + "AAAA", "web-deploy-prod")
            self.assertEqual((r.status_code, r.json()["error"]), (400, "invalid_grant"), r.text)
            r = b.exchange(self.issuer.mint(), "no-such-policy")
            self.assertEqual((r.status_code, r.json()["error"]), (400, "invalid_target"), r.text)
            r = requests.post(b.url + "/v1/token", data={"subject_token": "x" * 20000}, timeout=30)
            self.assertEqual(r.status_code, 413, r.text)
            self.assertEqual(requests.get(b.url + "/nope", timeout=30).status_code, 404)
            m = requests.get(b.url + "/metrics", timeout=30)
            self.assertIn('cibroker_exchanges_total{policy="web-deploy-prod",outcome="allow"} 1', m.text)
            self.assertEqual(requests.get(b.url + "/.well-known/jwks.json", timeout=30).status_code, 200)
            b.proc.send_signal(signal.SIGHUP)  # a reload swaps and frees a whole snapshot
            deadline = time.time() + 60
            while time.time() < deadline:
                if 'cibroker_reloads_total{result="ok"} 1' in requests.get(b.url + "/metrics", timeout=30).text:
                    break
                time.sleep(0.5)
            r = b.exchange(self.issuer.mint(), "web-deploy-prod")
            self.assertEqual(r.status_code, 200, r.text)
        finally:
            rc = self.stop_under_valgrind(b)
        self.assertEqual(rc, 0, f"valgrind/cibroker exit {rc} (99 = memcheck errors):\n{self.vg_report()}\n"
                                f"--- broker stderr ---\n{b.log()}")
        self.assertEqual(len(b.audit_records()), 7)

    def test_redis_replay_is_clean(self):
        """The hiredis path: a first use, a replay, then Redis gone (503)."""
        exe = shutil.which("redis-server")
        if not exe:
            print("\n*** SKIPPING the valgrind Redis run: redis-server is not installed ***\n", file=sys.stderr,
                  flush=True)
            self.skipTest("redis-server not installed")
        port = free_port()
        redis = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                  "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (redis.poll() is None and redis.kill(), redis.wait()))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        b = Broker([github_issuer_config(self.issuer, single_use=True)], [jwt_policy()],
                   extra={"replay": {"redis": f"redis://127.0.0.1:{port}"}})
        self.addCleanup(shutil.rmtree, b.dir, True)
        self.start_under_valgrind(b)
        try:
            tok = self.issuer.mint()
            r = b.exchange(tok, "web-deploy-prod")
            self.assertEqual(r.status_code, 200, r.text)
            r = b.exchange(tok, "web-deploy-prod")
            self.assertEqual((r.status_code, r.json()["error"]), (400, "invalid_grant"), r.text)
            redis.kill()
            redis.wait()
            r = b.exchange(self.issuer.mint(), "web-deploy-prod")
            self.assertEqual((r.status_code, r.json()["error"]), (503, "temporarily_unavailable"), r.text)
        finally:
            rc = self.stop_under_valgrind(b)
        self.assertEqual(rc, 0, f"valgrind/cibroker exit {rc} (99 = memcheck errors):\n{self.vg_report()}\n"
                                f"--- broker stderr ---\n{b.log()}")


if __name__ == "__main__":
    main()
