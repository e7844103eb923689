# SPDX-License-Identifier: Apache-2.0
"""Issuer keys with the real binary: readiness waits for keys, rotation is
picked up through an unknown-kid refetch, an outage is served from cached
keys, a burst of unknown kids costs at most one fetch per interval, a garbage
JWKS keeps the old keys, and hostile tokens never reach the policy."""
import concurrent.futures
import re
import signal
import time
import unittest

import requests

from harness import Broker, Issuer, github_issuer_config, jwt_policy, main


class IssuerIntegrationTest(unittest.TestCase):
    def setUp(self):
        self.issuer = Issuer().start()
        self.addCleanup(self.issuer.stop)

    def broker(self, **icfg):
        b = Broker([github_issuer_config(self.issuer, **icfg)], [jwt_policy()])
        self.addCleanup(b.stop)
        return b

    def test_not_ready_until_keys_then_ready(self):
        self.issuer.set_down(True)
        b = self.broker().start(wait_ready=False)
        r = requests.get(b.url + "/readyz")
        self.assertEqual(r.status_code, 503)
        self.assertIsInstance(r.json(), list)
        self.assertIn("github", r.json()[0])
        r = b.exchange(self.issuer.mint(), "web-deploy-prod")
        self.assertEqual(r.status_code, 503)
        self.assertEqual(r.json()["error"], "temporarily_unavailable")
        # the reason is on /readyz, and said once in the log
        deadline = time.time() + 5
        while time.time() < deadline and "fetching keys failed" not in b.log():
            time.sleep(0.1)
        self.assertRegex(requests.get(b.url + "/readyz").json()[0], r"^issuer github: no keys yet \(last fetch: .+\)$")
        self.assertIn("issuer github: fetching keys failed: ", b.log())
        self.assertIn("its exchanges answer 503 until it works", b.log())
        self.issuer.set_down(False)
        deadline = time.time() + 15
        while time.time() < deadline and requests.get(b.url + "/readyz").status_code != 200:
            time.sleep(0.2)
        self.assertEqual(requests.get(b.url + "/readyz").status_code, 200)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        deadline = time.time() + 5
        while time.time() < deadline and "keys fetched again" not in b.log():
            time.sleep(0.1)
        self.assertIn("issuer github: keys fetched again", b.log())
        self.assertEqual(b.log().count("fetching keys failed"), 1, b.log())

    def test_rotation_picked_up(self):
        b = self.broker(jwks_min_refetch="1s").start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        time.sleep(1.1)
        new_kid = self.issuer.rotate(drop_old=True)
        r = b.exchange(self.issuer.mint(kid=new_kid), "web-deploy-prod")
        self.assertEqual(r.status_code, 200, r.text)

    def test_outage_served_from_cache(self):
        b = self.broker().start()
        self.issuer.set_down(True)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        self.assertEqual(requests.get(b.url + "/readyz").status_code, 200)

    def test_reload_during_outage_keeps_the_keys(self):
        # a reload is not a reason to forget keys a failed refresh would keep
        b = self.broker().start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        self.issuer.set_down(True)
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while time.time() < deadline and 'reloads_total{result="ok"} 1' not in requests.get(b.url + "/metrics").text:
            time.sleep(0.1)
        self.assertIn('cibroker_reloads_total{result="ok"} 1', requests.get(b.url + "/metrics").text, b.log())
        r = b.exchange(self.issuer.mint(), "web-deploy-prod")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(requests.get(b.url + "/readyz").status_code, 200)

    def test_unknown_kid_burst_costs_one_fetch(self):
        b = self.broker(jwks_min_refetch="30s").start()
        time.sleep(0.2)
        self.issuer.reset_counts()
        tokens = [self.issuer.mint(headers={"kid": f"unknown-{i}"}) for i in range(60)]
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            codes = list(ex.map(lambda t: b.exchange(t, "web-deploy-prod").status_code, tokens))
        self.assertEqual(codes, [400] * 60)
        self.assertLessEqual(self.issuer.count("/jwks"), 1)

    def test_garbage_jwks_keeps_old_keys(self):
        b = self.broker(jwks_min_refetch="1s").start()
        self.issuer.set_jwks_raw(b"{not json")
        time.sleep(1.1)
        # unknown kid forces a refetch, which returns garbage
        self.assertEqual(b.exchange(self.issuer.mint(headers={"kid": "nope"}), "web-deploy-prod").status_code, 400)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        m = requests.get(b.url + "/metrics").text
        self.assertIn('cibroker_jwks_refreshes_total{issuer="github",result="failed"}', m)

    def test_refresh_counters_survive_a_reload_that_rebuilds_the_issuer(self):
        def counts():
            m = requests.get(b.url + "/metrics").text
            return {r: int(re.search(r'cibroker_jwks_refreshes_total\{issuer="github",result="%s"\} (\d+)' % r,
                                     m).group(1)) for r in ("ok", "failed")}
        b = self.broker(jwks_min_refetch="1s").start()
        self.issuer.set_jwks_raw(b"{not json")
        time.sleep(1.1)
        self.assertEqual(b.exchange(self.issuer.mint(headers={"kid": "nope"}), "web-deploy-prod").status_code, 400)
        before = counts()
        self.assertGreaterEqual(before["failed"], 1)
        b.config["issuers"][0]["jwks_min_refetch"] = "2s"  # a changed issuer is built anew on reload
        b.write_config()
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while time.time() < deadline and 'reloads_total{result="ok"} 1' not in requests.get(b.url + "/metrics").text:
            time.sleep(0.1)
        after = counts()
        self.assertGreaterEqual(after["failed"], before["failed"], "a counter went down without a restart")
        self.assertGreaterEqual(after["ok"], before["ok"], "a counter went down without a restart")

    def test_https_issuer_with_ca_file(self):
        tls = Issuer(tls=True).start()
        self.addCleanup(tls.stop)
        b = Broker([github_issuer_config(tls, ca_file=tls.ca_file)], [jwt_policy()])
        self.addCleanup(b.stop)
        b.start()
        self.assertEqual(b.exchange(tls.mint(), "web-deploy-prod").status_code, 200)

    def test_https_issuer_keys_never_over_http(self):
        # discovery over https naming an http jwks_uri (loopback, so the URL rule alone allows it)
        tls = Issuer(tls=True).start()
        self.addCleanup(tls.stop)
        tls.set_discovery_jwks_uri(self.issuer.jwks_uri)
        b = Broker([github_issuer_config(tls, ca_file=tls.ca_file)], [jwt_policy()])
        self.addCleanup(b.stop)
        b.start(wait_ready=False)
        deadline = time.time() + 10
        while time.time() < deadline and "fetching keys failed" not in b.log():
            time.sleep(0.1)
        r = requests.get(b.url + "/readyz")
        self.assertEqual(r.status_code, 503)
        self.assertIn("discovery jwks_uri is http for an https issuer", r.json()[0])
        self.assertEqual(self.issuer.count("/jwks"), 0, "keys were fetched over http")
        tls.set_discovery_jwks_uri(None)
        deadline = time.time() + 40
        while time.time() < deadline and requests.get(b.url + "/readyz").status_code != 200:
            time.sleep(0.2)
        self.assertEqual(b.exchange(tls.mint(), "web-deploy-prod").status_code, 200)

    def test_hostile_tokens_get_invalid_grant(self):
        b = self.broker().start()
        good = self.issuer.mint()
        h, p, s = good.split(".")
        rsa_pem = self.issuer.public_pem(self.issuer.kids[0])
        import hmac, hashlib, base64, json as _j

        def b64(x):
            return base64.urlsafe_b64encode(x).rstrip(b"=").decode()
        hs_hdr = b64(_j.dumps({"alg": "HS256", "typ": "JWT", "kid": self.issuer.kids[0]}).encode())
        hs_sig = b64(hmac.new(rsa_pem if isinstance(rsa_pem, bytes) else rsa_pem.encode(),
                              f"{hs_hdr}.{p}".encode(), hashlib.sha256).digest())
        cases = {
            "hs256 confusion": f"{hs_hdr}.{p}.{hs_sig}",
            "none": b64(b'{"alg":"none"}') + "." + p + ".",
            "padding": f"{h}.{p}=.{s}",
            "four segments": f"{h}.{p}.{s}.{s}",
            "oversize": f"{h}.{p}{'A' * 9000}.{s}",
            "jku": self.issuer.mint(headers={"jku": "http://127.0.0.1:1/jwks"}),
            "crit": self.issuer.mint(headers={"crit": ["exp"]}),
        }
        for name, tok in cases.items():
            with self.subTest(name):
                r = b.exchange(tok, "web-deploy-prod")
                self.assertIn(r.status_code, (400, 413), r.text)
                self.assertNotIn("access_token", r.text)
                if r.status_code == 400:
                    self.assertEqual(r.json()["error"], "invalid_grant")
        # none of them reached the policy engine: every audit record is invalid_grant or 413
        for rec in b.audit_records():
            self.assertIn(rec["error"], ("invalid_grant", "invalid_request"))
            self.assertIsNone(rec["credential"])
            self.assertIsNone(rec["sub"])      # unverified claims are not recorded as facts
            self.assertIsNone(rec["claims"])


if __name__ == "__main__":
    main()
