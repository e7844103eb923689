# SPDX-License-Identifier: Apache-2.0
"""The audit log with the real binary: fail closed on an unwritable sink,
nothing answered 200 is ever missing after SIGKILL, restarts continue the
chain, concurrent records never interleave, the chain checks with nothing but
sha256sum."""
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import unittest

import requests

from harness import BIN, Broker, Issuer, audited_credential_ids, github_issuer_config, jwt_policy, main, minted_jti


def chain_ok(path):
    prev = "0" * 64
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, line in enumerate(lines, 1):
        rec = json.loads(line)
        if rec["prev"] != prev:
            return i
        prev = hashlib.sha256(line).hexdigest()
    return 0


class AuditIntegrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.issuer = Issuer().start()

    @classmethod
    def tearDownClass(cls):
        cls.issuer.stop()

    def broker(self, **kw):
        b = Broker([github_issuer_config(self.issuer)], [jwt_policy()], **kw)
        self.addCleanup(b.stop)
        return b

    def test_full_disk_gives_503_and_no_credential(self):
        b = self.broker(audit_path="/dev/full").start(wait_ready=False)
        deadline = time.time() + 10
        while time.time() < deadline and requests.get(b.url + "/healthz").status_code != 200:
            time.sleep(0.1)
        for _ in range(3):
            r = b.exchange(self.issuer.mint(), "web-deploy-prod")
            self.assertEqual(r.status_code, 503, r.text)
            self.assertEqual(r.json()["error"], "temporarily_unavailable")
            self.assertNotIn("access_token", r.text)
        ready = requests.get(b.url + "/readyz")
        self.assertEqual(ready.status_code, 503)
        self.assertIn("audit", ready.text)
        self.assertIn("cibroker_audit_errors_total 3", requests.get(b.url + "/metrics").text)
        # and the operator reads it in the log, once, not only on /readyz
        deadline = time.time() + 5
        while time.time() < deadline and "audit log not writable" not in b.log():
            time.sleep(0.1)
        self.assertIn("audit log not writable:", b.log())
        self.assertIn("exchanges answer 503 until it is", b.log())
        b.exchange(self.issuer.mint(), "web-deploy-prod")
        time.sleep(1.5)
        self.assertEqual(b.log().count("audit log not writable"), 1, b.log())

    def test_sigkill_under_load_loses_no_answered_record(self):
        b = self.broker(audit_sync="always").start()
        answered = []
        lock = threading.Lock()
        stop = threading.Event()
        tokens = [self.issuer.mint() for _ in range(400)]

        def worker(chunk):
            for t in chunk:
                if stop.is_set():
                    return
                try:
                    r = b.exchange(t, "web-deploy-prod")
                except requests.RequestException:
                    return
                if r.status_code == 200:
                    with lock:
                        answered.append(minted_jti(r.json()))

        threads = [threading.Thread(target=worker, args=(tokens[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        while True:
            with lock:
                if len(answered) >= 60:
                    break
            time.sleep(0.01)
        b.proc.send_signal(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join()
        b.proc.wait()
        with lock:
            got = list(answered)
        self.assertGreaterEqual(len(got), 60)
        ids = audited_credential_ids(b.audit_path)  # a torn tail is allowed: it was never answered
        missing = [j for j in got if j not in ids]
        self.assertEqual(missing, [], f"{len(missing)} answered credentials have no audit record")
        # restart on the same file: the chain continues and verifies
        b2 = Broker([github_issuer_config(self.issuer)], [jwt_policy()], audit_path=b.audit_path).start()
        self.addCleanup(b2.stop)
        self.assertEqual(b2.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        b2.stop()
        out = subprocess.run([BIN, "audit", "verify", b.audit_path], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_restart_continues_chain_and_sha256_check(self):
        b = self.broker().start()
        for _ in range(3):
            self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        b.stop()
        b2 = Broker([github_issuer_config(self.issuer)], [jwt_policy()], audit_path=b.audit_path).start()
        self.addCleanup(b2.stop)
        for _ in range(3):
            self.assertEqual(b2.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        b2.stop()
        self.assertEqual(chain_ok(b.audit_path), 0)
        # the same with nothing but the shell and sha256sum
        script = r'''
prev=0000000000000000000000000000000000000000000000000000000000000000; n=0
while IFS= read -r line; do n=$((n+1))
  case "$line" in *"\"prev\":\"$prev\"}") ;; *) echo "bad line $n"; exit 1;; esac
  prev=$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)
done < "$1"; echo "ok $n"'''
        out = subprocess.run(["sh", "-c", script, "sh", b.audit_path], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertEqual(out.stdout.strip(), "ok 6")
        # an edit is caught at its line by `cibroker audit verify`
        with open(b.audit_path, "rb") as f:
            lines = f.read().split(b"\n")
        lines[3] = lines[3].replace(b'"decision":"allow"', b'"decision":"deny"')
        with open(b.audit_path, "wb") as f:
            f.write(b"\n".join(lines))
        out = subprocess.run([BIN, "audit", "verify", b.audit_path], capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn(":5", out.stdout + out.stderr)

    def test_concurrent_records_never_interleave(self):
        b = self.broker(audit_sync="always").start()
        tokens = [self.issuer.mint() for _ in range(200)]
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            codes = list(ex.map(lambda t: b.exchange(t, "web-deploy-prod").status_code, tokens))
        self.assertEqual(codes.count(200), 200)
        recs = b.audit_records()  # every line parses as one JSON object
        self.assertEqual(len(recs), 200)
        self.assertEqual(chain_ok(b.audit_path), 0)

    def test_sigusr1_reopens_for_logrotate(self):
        b = self.broker().start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        os.rename(b.audit_path, b.audit_path + ".1")
        b.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 5
        while time.time() < deadline and not os.path.exists(b.audit_path):
            time.sleep(0.05)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        self.assertEqual(len(b.audit_records()), 1)
        self.assertEqual(b.audit_records()[0]["prev"], "0" * 64)

    def test_failed_reopen_keeps_the_open_file_and_says_why(self):
        b = self.broker().start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        os.rename(b.audit_path, b.audit_path + ".1")
        os.mkdir(b.audit_path)  # the path is now something no log can be
        b.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 5
        while time.time() < deadline and "audit log not reopened" not in b.log():
            time.sleep(0.05)
        self.assertIn("audit log not reopened: Is a directory; still appending to the file it had open", b.log())
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        with open(b.audit_path + ".1") as f:
            self.assertEqual(len(f.read().splitlines()), 2)
        self.assertEqual(chain_ok(b.audit_path + ".1"), 0)


if __name__ == "__main__":
    main()
