# SPDX-License-Identifier: Apache-2.0
"""The real cibroker binary over HTTP: every row of DESIGN.md's status table,
the minted token checked by an independent JOSE implementation (PyJWT) against
the broker's own JWKS, discovery, probes, concurrency and slow clients."""
import base64
import concurrent.futures
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import jwt
import requests

from harness import (BIN, GRANT, JWT_TYPE, Broker, Issuer, github_issuer_config, jwt_policy, main)


class ExchangeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.issuer = Issuer().start()
        policies = [
            jwt_policy(claims={"scope": "deploy:web", "repo": "${repository}"},
                       subject="repo:${repository}:env:${environment}", deny={"actor": ["dependabot[bot]"]}),
            jwt_policy(name="needs-env", allow={"repository": "acme/web", "repository_id": "89221572",
                                                "environment": {"regex": "^prod(-eu|-us)?$"}}),
            jwt_policy(name="tmpl-missing", subject="${no_such_claim}"),
            {"name": "aws-web", "issuer": "github",
             "allow": {"repository": "acme/web", "repository_id": "89221572"},
             "credential": {"type": "aws", "role_arn": "arn:aws:iam::123456789012:role/deploy-web",
                            "ttl": "15m", "session_name": "gh-${run_id}"}},
        ]
        cls.broker = Broker([github_issuer_config(cls.issuer, clock_skew="30s")], policies,
                            extra={"aws": {"sts_endpoint": "http://127.0.0.1:9/", "region": "us-east-1"}},
                            env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example-secret",
                                 "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.issuer.stop()

    def ok(self, token=None, audience="web-deploy-prod", **extra):
        r = self.broker.exchange(token or self.issuer.mint(), audience, **extra)
        return r

    def assertError(self, r, status, error):
        self.assertEqual(r.status_code, status, r.text)
        body = r.json()
        self.assertEqual(body["error"], error, body)
        self.assertIn("error_description", body)
        self.assertTrue(body.get("request_id"), body)
        self.assertNotIn("access_token", body)
        return body

    # ---- success and the minted token ----
    def test_success_minted_token_verifies_independently(self):
        r = self.ok()
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers.get("Cache-Control"), "no-store")
        body = r.json()
        self.assertEqual(body["issued_token_type"], JWT_TYPE)
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["expires_in"], 300)
        jwks = requests.get(self.broker.url + "/.well-known/jwks.json").json()
        hdr = jwt.get_unverified_header(body["access_token"])
        self.assertEqual(hdr["alg"], "ES256")
        self.assertEqual(hdr["typ"], "JWT")
        self.assertEqual(hdr["kid"], self.broker.kids[0])
        key = [k for k in jwks["keys"] if k["kid"] == hdr["kid"]][0]
        self.assertEqual((key["use"], key["alg"], key["kty"], key["crv"]), ("sig", "ES256", "EC", "P-256"))
        self.assertNotIn("d", key)
        pub = jwt.PyJWK(key).key
        claims = jwt.decode(body["access_token"], pub, algorithms=["ES256"], audience="https://deploy.acme.internal",
                            issuer=self.broker.public_url)
        self.assertEqual(claims["sub"], "repo:acme/web:env:production")
        self.assertEqual(claims["policy"], "web-deploy-prod")
        self.assertEqual(claims["scope"], "deploy:web")
        self.assertEqual(claims["repo"], "acme/web")
        self.assertEqual(claims["exp"] - claims["iat"], 300)
        self.assertLessEqual(claims["nbf"], claims["iat"])
        self.assertGreaterEqual(len(claims["jti"]), 22)
        self.assertEqual(claims["ci"]["iss"], self.issuer.url)
        self.assertEqual(claims["ci"]["repository"], "acme/web")
        self.assertEqual(claims["ci"]["ref"], "refs/heads/main")
        self.assertIn("sha", claims["ci"])
        self.assertIn("run_id", claims["ci"])

    def test_json_body_accepted(self):
        r = requests.post(self.broker.url + "/v1/token", json={
            "grant_type": GRANT, "subject_token": self.issuer.mint(), "subject_token_type": JWT_TYPE,
            "audience": "web-deploy-prod"})
        self.assertEqual(r.status_code, 200, r.text)

    def test_id_token_type_and_requested_type(self):
        r = self.ok(subject_token_type="urn:ietf:params:oauth:token-type:id_token",
                    requested_token_type=JWT_TYPE)
        self.assertEqual(r.status_code, 200, r.text)

    def test_jtis_unique(self):
        jtis = set()
        for _ in range(20):
            r = self.ok()
            self.assertEqual(r.status_code, 200)
            jtis.add(jwt.decode(r.json()["access_token"], options={"verify_signature": False})["jti"])
        self.assertEqual(len(jtis), 20)

    # ---- error rows ----
    def test_missing_parameters(self):
        for p in ("grant_type", "subject_token", "subject_token_type", "audience"):
            r = self.ok(**{p: None})
            self.assertError(r, 400, "invalid_request")

    def test_duplicate_parameter(self):
        tok = self.issuer.mint()
        body = (f"grant_type={GRANT}&subject_token={tok}&subject_token_type={JWT_TYPE}"
                f"&audience=web-deploy-prod&audience=needs-env")
        r = requests.post(self.broker.url + "/v1/token", data=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 400, "invalid_request")

    def test_bad_content_type(self):
        r = requests.post(self.broker.url + "/v1/token", data=b"grant_type=x",
                          headers={"Content-Type": "text/plain"})
        self.assertError(r, 400, "invalid_request")

    def test_malformed_json_and_escape(self):
        r = requests.post(self.broker.url + "/v1/token", data=b'{"grant_type": 1}',
                          headers={"Content-Type": "application/json"})
        self.assertError(r, 400, "invalid_request")
        r = requests.post(self.broker.url + "/v1/token", data=b"grant_type=%zz",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 400, "invalid_request")

    def test_wrong_subject_token_type(self):
        self.assertError(self.ok(subject_token_type="urn:ietf:params:oauth:token-type:saml2"), 400,
                         "invalid_request")

    def test_unsupported_grant_type(self):
        self.assertError(self.ok(grant_type="client_credentials"), 400, "unsupported_grant_type")

    def test_requested_type_mismatch(self):
        self.assertError(self.ok(requested_token_type="urn:cibroker:token-type:aws-credentials"), 400,
                         "invalid_request")

    def test_invalid_target(self):
        self.assertError(self.ok(audience="no-such-policy"), 400, "invalid_target")

    def test_invalid_grant_rows(self):
        iss = self.issuer
        cases = {
            "garbage": "not.a.token",
            "expired": iss.mint(exp_in=-120),
            "future iat": iss.mint(iat_offset=600, exp_in=900),
            "stale iat": iss.mint(iat_offset=-3600, exp_in=300),
            "wrong aud": iss.mint({"aud": "https://other.example"}),
            "wrong iss": iss.mint({"iss": iss.url + "/"}),
            "no sub": iss.mint({"sub": None}),
            "unknown kid": iss.mint(headers={"kid": "nope"}),
            "alg none": iss.mint(headers={"alg": "none"}),
            "bad signature": iss.mint()[:-4] + "AAAA",
            "trailing dot": iss.mint() + ".",
        }
        for name, tok in cases.items():
            with self.subTest(name):
                self.assertError(self.ok(tok), 400, "invalid_grant")

    def test_policy_denied_says_which_claim_not_value(self):
        body = self.assertError(self.ok(self.issuer.mint({"ref": "refs/heads/dev"})), 403, "access_denied")
        self.assertIn("ref", body["error_description"])
        self.assertNotIn("refs/heads/main", body["error_description"])
        body = self.assertError(self.ok(self.issuer.mint({"actor": "dependabot[bot]"})), 403, "access_denied")
        self.assertIn("actor", body["error_description"])
        self.assertNotIn("dependabot", body["error_description"])
        self.assertError(self.ok(self.issuer.mint({"environment": "staging"}), audience="needs-env"), 403,
                         "access_denied")

    def test_template_missing_claim_denies(self):
        self.assertError(self.ok(audience="tmpl-missing"), 403, "access_denied")

    def test_upstream_down_is_503(self):
        # aws policy: STS endpoint on a closed port
        r = self.ok(audience="aws-web")
        self.assertError(r, 503, "temporarily_unavailable")

    def test_oversize_body_413(self):
        big = "a" * (17 * 1024)
        r = self.ok(big)
        self.assertError(r, 413, "invalid_request")

    def test_body_at_limit_with_large_headers_is_served(self):
        # libmicrohttpd's per-connection pool holds the headers; the body goes to
        # the broker's own buffer. A body just under max_body (16 KiB) together
        # with 8 KB of headers must still reach the exchange, whole.
        token = self.issuer.mint()
        tail = f"&grant_type={GRANT}&subject_token={token}&subject_token_type={JWT_TYPE}&audience=web-deploy-prod"
        body = "pad=" + "p" * (16 * 1024 - len(tail) - 4) + tail
        self.assertEqual(len(body), 16 * 1024)
        r = requests.post(self.broker.url + "/v1/token", data=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "X-Trace": "t" * 8000})
        # the parameters sit at the very end: only a whole body makes this an allow
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIn("access_token", r.json())

    def test_oversize_chunked_413(self):
        def gen():
            for _ in range(40):
                yield b"x" * 1024
        r = requests.post(self.broker.url + "/v1/token", data=gen(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 413, "invalid_request")
        # With sync: always the 413 waits for its record like any exchange.
        recs = [x for x in self.broker.audit_records() if x["request_id"] == r.json()["request_id"]]
        self.assertEqual(len(recs), 1)
        self.assertEqual((recs[0]["decision"], recs[0]["error"]), ("deny", "invalid_request"))
        self.assertIn("too large", recs[0]["reason"])

    def raw(self, data, timeout=5.0):
        """Send bytes as they are; read until the broker closes (or timeout)."""
        s = socket.create_connection(("127.0.0.1", self.broker.port), timeout=timeout)
        out = b""
        try:
            s.sendall(data)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
        except socket.timeout:
            out += b"<timeout>"
        finally:
            s.close()
        return out

    def test_ambiguous_framing_is_refused_and_closed(self):
        # each of these frames the same bytes two ways (RFC 9112 §6.1, §6.3, §5.1):
        # behind a proxy that picks the other way, a request could be smuggled
        token = self.issuer.mint()
        body = (f"grant_type={GRANT}&subject_token={token}&subject_token_type={JWT_TYPE}"
                "&audience=web-deploy-prod").encode()
        head = b"POST /v1/token HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n"
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        cases = [
            (head + b"Content-Length: 3\r\nContent-Length: %d\r\n\r\n" % len(body) + body + smuggled,
             400, b"conflicting Content-Length headers"),
            (head + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + smuggled,
             400, b"both Transfer-Encoding and Content-Length"),
            (head + b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n\r\n" % len(body) + body + smuggled,
             400, b"header name with a space or tab"),
            (head + b"Transfer-Encoding: gzip\r\n\r\n" + body, 501, b"transfer coding not supported"),
            (head + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked, 501, b"transfer coding not supported"),
            (b"POST /v1/token HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
             400, b"more than one Content-Type header"),
            (b"GET /healthz HTTP/1.1\r\n\r\n", 400, b"exactly one Host header"),
        ]
        before = len(self.broker.audit_records())
        for data, status, why in cases:
            with self.subTest(why=why):
                out = self.raw(data)
                self.assertTrue(out.startswith(b"HTTP/1.1 %d " % status), out[:200])
                self.assertIn(b"Connection: close", out.split(b"\r\n\r\n")[0])
                self.assertIn(b'"error":"invalid_request"', out)
                self.assertIn(why, out)
                self.assertNotIn(b"access_token", out)
                self.assertEqual(out.count(b"HTTP/1.1 2"), 0, "a smuggled request was served")
        # none of them reached a decision, so none is audited, and no credential was minted
        self.assertEqual(len(self.broker.audit_records()), before)

    def test_framing_that_is_fine(self):
        token = self.issuer.mint()
        body = (f"grant_type={GRANT}&subject_token={token}&subject_token_type={JWT_TYPE}"
                "&audience=web-deploy-prod").encode()
        # the same Content-Length twice is one framing (RFC 9112 §6.3 allows it)
        out = self.raw(b"POST /v1/token HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                       b"Content-Length: %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                       % (len(body), len(body)) + body)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:300])
        # absolute-form target (RFC 9112 §3.2.2), and HTTP/1.0 needs no Host
        out = self.raw(b"GET http://127.0.0.1:%d/healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                       % self.broker.port)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:300])
        out = self.raw(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertIn(b" 200 ", out.split(b"\r\n")[0])

    def test_wrong_method_and_path(self):
        r = requests.get(self.broker.url + "/v1/token")
        self.assertError(r, 405, "invalid_request")
        self.assertIn("POST", r.headers.get("Allow", ""))
        r = requests.post(self.broker.url + "/healthz")
        self.assertError(r, 405, "invalid_request")
        self.assertError(requests.get(self.broker.url + "/nope"), 404, "invalid_request")
        self.assertError(requests.get(self.broker.url + "/dev/token"), 404, "invalid_request")
        self.assertError(requests.post(self.broker.url + "/dev/token"), 404, "invalid_request")
        # escapes are decoded, except %00, which cannot cut a path short
        self.assertEqual(requests.get(self.broker.url + "/health%7a").status_code, 200)
        self.assertError(requests.get(self.broker.url + "/healthz%00x"), 404, "invalid_request")
        self.assertError(requests.post(self.broker.url + "/v1/token%00", data={"grant_type": GRANT}),
                         404, "invalid_request")

    # ---- other endpoints ----
    def test_discovery_and_probes(self):
        d = requests.get(self.broker.url + "/.well-known/openid-configuration").json()
        self.assertEqual(d["issuer"], self.broker.public_url)
        self.assertEqual(d["jwks_uri"], self.broker.public_url + "/.well-known/jwks.json")
        self.assertEqual(d["token_endpoint"], self.broker.public_url + "/v1/token")
        self.assertIn(GRANT, d["grant_types_supported"])
        self.assertEqual(d["token_endpoint_auth_methods_supported"], ["none"])
        self.assertIn("ES256", d["id_token_signing_alg_values_supported"])
        self.assertEqual(requests.get(self.broker.url + "/healthz").status_code, 200)
        r = requests.get(self.broker.url + "/readyz")
        self.assertEqual(r.status_code, 200, r.text)
        m = requests.get(self.broker.url + "/metrics").text
        self.assertIn("cibroker_exchanges_total{", m)
        self.assertIn("cibroker_exchange_duration_seconds_bucket", m)
        self.assertIn('cibroker_jwks_refreshes_total{issuer="github",result="ok"}', m)
        self.assertIn(f'cibroker_signing_key_age_seconds{{kid="{self.broker.kids[0]}"}}', m)
        self.assertIn('cibroker_jwks_age_seconds{issuer="github"}', m)
        self.assertIn('outcome="allow"', m)

    def test_audit_records_every_decision_without_secrets(self):
        tok = self.issuer.mint()
        r = self.ok(tok)
        self.assertEqual(r.status_code, 200)
        access = r.json()["access_token"]
        denied = self.ok(self.issuer.mint({"ref": "refs/heads/dev"}))
        self.assertEqual(denied.status_code, 403)
        recs = self.broker.audit_records()
        with open(self.broker.audit_path) as f:
            raw = f.read()
        self.assertNotIn(tok, raw)
        self.assertNotIn(tok.split(".")[2], raw)
        self.assertNotIn(access, raw)
        self.assertNotIn(access.split(".")[2], raw)
        allow = [x for x in recs if x["request_id"] == r.json().get("request_id") or (
            x["decision"] == "allow" and x["credential"] and x["credential"]["id"] ==
            jwt.decode(access, options={"verify_signature": False})["jti"])]
        self.assertEqual(len(allow), 1)
        a = allow[0]
        for field in ("ts", "request_id", "remote", "decision", "error", "reason", "audience", "policy", "issuer",
                      "sub", "token_jti", "claims", "credential", "latency_us", "prev"):
            self.assertIn(field, a)
        self.assertEqual(a["credential"]["type"], "jwt")
        self.assertEqual(a["remote"], "127.0.0.1")
        d = [x for x in recs if x["request_id"] == denied.json()["request_id"]][0]
        self.assertEqual(d["decision"], "deny")
        self.assertEqual(d["error"], "access_denied")
        self.assertIn("ref", d["reason"])
        out = subprocess.run([BIN, "audit", "verify", self.broker.audit_path], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    # ---- load ----
    def test_concurrent_exchanges(self):
        tokens = [self.issuer.mint() for _ in range(300)]
        local = threading.local()

        def one(t):
            # one keep-alive connection per client thread, as CI runners behave; a fresh
            # connection per request would mostly measure the per-IP connection limit
            if not hasattr(local, "s"):
                local.s = requests.Session()
            r = local.s.post(self.broker.url + "/v1/token", timeout=60, data={
                "grant_type": GRANT, "subject_token": t, "subject_token_type": JWT_TYPE,
                "audience": "web-deploy-prod"})
            return r.status_code, r.json()

        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            results = list(ex.map(one, tokens))
        self.assertEqual([s for s, _ in results].count(200), 300)
        jtis = {jwt.decode(b["access_token"], options={"verify_signature": False})["jti"] for _, b in results}
        self.assertEqual(len(jtis), 300)

    def test_slow_clients_do_not_starve_others(self):
        socks = []
        try:
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", self.broker.port))
                s.sendall(b"POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                          b"Content-Length: 1000\r\n\r\ngrant_type=")
                socks.append(s)
            r = self.ok()
            self.assertEqual(r.status_code, 200)
        finally:
            for s in socks:
                s.close()


class DevModeTest(unittest.TestCase):
    def test_dev_walkthrough(self):
        from harness import free_port
        port = free_port()
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        errf = tempfile.NamedTemporaryFile("w+", prefix="cibroker-dev-", suffix=".err")
        self.addCleanup(errf.close)
        p = subprocess.Popen([BIN, "dev", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                             stderr=errf, text=True, cwd=repo)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    if requests.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            tok = requests.post(url + "/dev/token").text
            r = requests.post(url + "/v1/token", data={"grant_type": GRANT, "subject_token": tok,
                                                       "subject_token_type": JWT_TYPE, "audience": "api-deploy-prod"})
            self.assertEqual(r.status_code, 200, r.text)
            tok = requests.post(url + "/dev/token", json={"ref": "refs/heads/feature"}).text
            r = requests.post(url + "/v1/token", data={"grant_type": GRANT, "subject_token": tok,
                                                       "subject_token_type": JWT_TYPE, "audience": "api-deploy-prod"})
            self.assertEqual(r.status_code, 403, r.text)
            tok = requests.post(url + "/dev/token?shape=gitlab").text
            r = requests.post(url + "/v1/token", data={"grant_type": GRANT, "subject_token": tok,
                                                       "subject_token_type": JWT_TYPE,
                                                       "audience": "gitlab-main-deploy"})
            self.assertEqual(r.status_code, 200, r.text)
            r = requests.post(url + "/v1/token", data={"grant_type": GRANT, "subject_token": tok,
                                                       "subject_token_type": JWT_TYPE, "audience": "api-deploy-prod"})
            self.assertEqual(r.status_code, 403, r.text)
            # the dev token carries the claims of the GitHub sample claim set
            sample = os.path.join(os.path.dirname(repo), "shared", "testdata", "claims", "github-actions.json")
            if os.path.exists(sample):
                with open(sample) as f:
                    want = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
                payload = requests.post(url + "/dev/token").text.split(".")[1]
                got = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                for k in ("iss", "aud", "jti", "iat", "nbf", "exp"):
                    want.pop(k, None)
                    got.pop(k, None)
                self.assertEqual(got, want)
            # the client line it prints works when pasted: elsewhere, with nothing of ours on PATH
            deadline = time.time() + 20
            lines = []
            while time.time() < deadline and not lines:
                errf.seek(0)
                lines = [line for line in errf.read().splitlines() if "exchange --broker" in line]
                time.sleep(0.1)
            self.assertEqual(len(lines), 1, lines)
            pasted = subprocess.run(["bash", "-c", lines[0]], capture_output=True, text=True, timeout=60,
                                    cwd=tempfile.gettempdir(), env=dict(os.environ, PATH="/usr/bin:/bin"))
            self.assertEqual(pasted.returncode, 0, pasted.stderr)
            self.assertIn("access_token", json.loads(pasted.stdout))
        finally:
            p.terminate()
            out, _ = p.communicate(timeout=20)
            errf.seek(0)
            err = errf.read()
        self.assertIn("HTTP 200", err)
        self.assertIn("/v1/token", err)
        self.assertIn('"decision":"allow"', out)  # audit on stdout
        self.assertEqual(p.returncode, 0, err)

    def test_serve_has_no_dev_issuer_option(self):
        out = subprocess.run([BIN, "serve", "--dev"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)


if __name__ == "__main__":
    main()
