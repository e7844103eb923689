#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`cibroker exchange` (the CI-side client) and the CI examples, against
loopback stand-ins of the broker and of GitHub Actions' ID-token endpoint
(tests/fixtures/fake_broker.py).

Run: CIBROKER_BIN=build/cibroker /usr/bin/python3 tests/integration/test_exchange_client.py
Ends with "N passed, N failed"; exit 1 on any failure.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True  # keep tests/fixtures free of __pycache__
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import fake_broker as fb  # noqa: E402

BIN = os.path.abspath(os.environ.get("CIBROKER_BIN") or os.path.join(ROOT, "build", "cibroker"))
GH_EXAMPLE = os.path.join(ROOT, "examples", "github-actions", "deploy.yml")
GL_EXAMPLE = os.path.join(ROOT, "examples", "gitlab-ci", ".gitlab-ci.yml")
DEPLOY_SH = os.path.join(ROOT, "examples", "deploy.sh")

GITHUB = fb.TestIssuer("https://token.actions.githubusercontent.com")
GITLAB = fb.TestIssuer("https://gitlab.example.com")
broker = actions = None


def setUpModule():
    global broker, actions
    broker = fb.FakeBroker(issuer="https://broker.example.com", issuers=[GITHUB, GITLAB]).start()
    actions = fb.FakeActions(GITHUB).start()
    with open(BIN, "rb") as f:
        broker.downloads["cibroker"] = f.read()


def tearDownModule():
    broker.stop()
    actions.stop()


def base_env():
    """A clean environment: nothing leaks in from the machine running the
    tests (a real CI's ACTIONS_* or proxies)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", ""),
            "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "")}


def actions_env():
    return {"GITHUB_ACTIONS": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": actions.request_url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": actions.request_token}


class Result:
    def __init__(self, p, elapsed):
        self.rc, self.out, self.err, self.elapsed = p.returncode, p.stdout, p.stderr, elapsed


class ClientTest(unittest.TestCase):
    def setUp(self):
        broker.reset()
        actions.reset()
        self.tmp = tempfile.mkdtemp(prefix="cibroker-client-")
        self.secret_inputs = []   # ID tokens handed in: must never be echoed

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        issued = self.secret_inputs + actions.issued
        for res in getattr(self, "results", []):
            for tok in issued:
                self.assertNotIn(tok, res.out + res.err, "an ID token was printed")

    def run_client(self, *args, env=None, stdin=None, retry="5"):
        e = base_env()
        if retry is not None:
            e["CIBROKER_RETRY_MAX_TIME"] = retry
        e.update(env or {})
        t0 = time.monotonic()
        p = subprocess.run([BIN, "exchange", *args], env=e, input=stdin, capture_output=True, text=True,
                           timeout=90)
        res = Result(p, time.monotonic() - t0)
        self.results = getattr(self, "results", []) + [res]
        return res

    def exchange(self, *extra, env=None, **kw):
        return self.run_client("--broker", broker.url, "--audience", "web-deploy-prod", *extra,
                               env=env if env is not None else actions_env(), **kw)

    def assert_form(self, req, subject_token, audience="web-deploy-prod"):
        self.assertEqual(req["form"]["grant_type"], ["urn:ietf:params:oauth:grant-type:token-exchange"])
        self.assertEqual(req["form"]["subject_token"], [subject_token])
        self.assertEqual(req["form"]["subject_token_type"], ["urn:ietf:params:oauth:token-type:jwt"])
        self.assertEqual(req["form"]["audience"], [audience])
        self.assertEqual(req["content_type"], "application/x-www-form-urlencoded")


class TokenSources(ClientTest):
    def test_actions_default_audience_from_discovery(self):
        res = self.exchange()
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(len(broker.discovery_requests()), 1)
        self.assertEqual(len(actions.requests), 1)
        q = actions.requests[0]
        self.assertEqual(q["query"]["audience"], ["https://broker.example.com"])
        self.assertEqual(q["query"]["api-version"], ["2.0"])
        self.assertEqual(q["authorization"], "Bearer " + actions.request_token)
        reqs = broker.token_requests()
        self.assertEqual(len(reqs), 1)
        self.assert_form(reqs[0], actions.issued[0])
        self.assertEqual(res.out, broker.minted[0] + "\n")

    def test_actions_explicit_audience_skips_discovery(self):
        broker.reset(accepted_audiences=["sts.example.com/web"])
        res = self.exchange("--id-token-audience", "sts.example.com/web")
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(broker.discovery_requests(), [])
        self.assertEqual(actions.requests[0]["query"]["audience"], ["sts.example.com/web"])

    def test_actions_wrong_bearer_is_refused(self):
        env = actions_env()
        env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "not-the-runtime-token"
        res = self.exchange(env=env)
        self.assertEqual(res.rc, 3, res.err)
        self.assertIn("HTTP 401", res.err)
        self.assertEqual(broker.token_requests(), [])
        self.assertNotIn("not-the-runtime-token", res.out + res.err)

    def test_actions_url_must_not_be_cleartext_remote(self):
        env = actions_env()
        env["ACTIONS_ID_TOKEN_REQUEST_URL"] = "http://runtime.example.com/_apis/token?api-version=2.0"
        res = self.exchange(env=env)
        self.assertEqual(res.rc, 2)
        self.assertEqual(broker.requests, [])

    def test_gitlab_env_variable(self):
        tok = GITLAB.id_token("https://broker.example.com")
        self.secret_inputs.append(tok)
        res = self.exchange(env={"CIBROKER_ID_TOKEN": tok})
        self.assertEqual(res.rc, 0, res.err)
        self.assert_form(broker.token_requests()[0], tok)
        self.assertEqual(broker.discovery_requests(), [], "no audience needed for a given token")

    def test_named_env_variable(self):
        tok = GITLAB.id_token("https://broker.example.com")
        self.secret_inputs.append(tok)
        res = self.exchange("--id-token-env", "MY_TOKEN", env={"MY_TOKEN": tok, "CIBROKER_ID_TOKEN": "x.y.z"})
        self.assertEqual(res.rc, 0, res.err)
        self.assert_form(broker.token_requests()[0], tok)
        res = self.exchange("--id-token-env", "UNSET_TOKEN", env={})
        self.assertEqual(res.rc, 2)

    def test_file_and_stdin(self):
        tok = GITLAB.id_token("https://broker.example.com")
        self.secret_inputs.append(tok)
        path = os.path.join(self.tmp, "id_token")
        with open(path, "w") as f:
            f.write(tok + "\n")
        cases = [(("--id-token-file", path), None), (("--id-token-file", "-"), tok + "\n"), ((), tok)]
        for args, stdin in cases:
            with self.subTest(args=args):
                broker.reset()
                res = self.exchange(*args, env={}, stdin=stdin)
                self.assertEqual(res.rc, 0, res.err)
                self.assert_form(broker.token_requests()[0], tok)

    def test_bad_token_from_actions_is_not_sent(self):
        actions.reset(value="a b.c.d")
        res = self.exchange()
        self.assertEqual(res.rc, 2, res.err)
        self.assertIn("GitHub Actions", res.err)
        self.assertEqual(broker.token_requests(), [])

    def test_bad_id_tokens_are_usage_errors(self):
        path = os.path.join(self.tmp, "missing")
        for args, stdin in [(("--id-token-file", path), None), ((), ""), ((), "two words\n"),
                            ((), "a" * 70000)]:
            with self.subTest(args=args, stdin=stdin[:10] if stdin else stdin):
                res = self.exchange(*args, env={}, stdin=stdin)
                self.assertEqual(res.rc, 2, res.err)
        self.assertEqual(broker.token_requests(), [])

    def test_invalid_grant_is_refused(self):
        tok = GITLAB.id_token("https://someone-else.example.com")
        self.secret_inputs.append(tok)
        res = self.exchange(env={"CIBROKER_ID_TOKEN": tok})
        self.assertEqual(res.rc, 3)
        self.assertIn("invalid_grant: subject token not verifiable (request_id ", res.err)


class Formats(ClientTest):
    def shell_eval(self, text, names):
        script = 'eval "$(cat)"; ' + "; ".join('printf "%%s\\0" "$%s"' % n for n in names)
        p = subprocess.run(["sh", "-c", script], input=text, capture_output=True, text=True, env=base_env())
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.split("\0")[:-1]

    def test_token(self):
        res = self.exchange("--format", "token")
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(res.out, broker.minted[0] + "\n")

    def test_default_format_is_token(self):
        res = self.exchange()
        self.assertEqual(res.out, broker.minted[0] + "\n")

    def test_json_is_the_answer_as_received(self):
        for answer in (fb.jwt_ok(), fb.aws_ok()):
            with self.subTest(kind=answer["body"]["issued_token_type"]):
                broker.reset([answer])
                res = self.exchange("--format", "json")
                self.assertEqual(res.rc, 0, res.err)
                self.assertEqual(res.out, json.dumps(broker.answers[0]) + "\n")

    def test_env_jwt_quotes_safely(self):
        nasty = "ab'c$(touch %s/pwned)`x`\"d\\e" % self.tmp
        broker.reset([fb.jwt_ok(nasty)])
        res = self.exchange("--format", "env")
        self.assertEqual(res.rc, 0, res.err)
        self.assertTrue(res.out.startswith("export CIBROKER_TOKEN='"), res.out)
        self.assertEqual(self.shell_eval(res.out, ["CIBROKER_TOKEN"]), [nasty])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "pwned")))

    def test_env_aws(self):
        broker.reset([fb.aws_ok()])
        res = self.exchange("--format", "env")
        self.assertEqual(res.rc, 0, res.err)
        c = broker.answers[0]["credentials"]
        self.assertEqual(len(res.out.splitlines()), 3)
        self.assertEqual(self.shell_eval(res.out, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]),
                         [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]])
        # shell-safe values come as DESIGN.md's plain `export NAME=value`
        self.assertEqual(res.out.splitlines(), [f"export AWS_ACCESS_KEY_ID={c['AccessKeyId']}",
                                                f"export AWS_SECRET_ACCESS_KEY={c['SecretAccessKey']}",
                                                f"export AWS_SESSION_TOKEN={c['SessionToken']}"])

    def test_env_jwt_plain(self):
        res = self.exchange("--format", "env")
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(res.out, f"export CIBROKER_TOKEN={broker.minted[0]}\n")
        self.assertEqual(self.shell_eval(res.out, ["CIBROKER_TOKEN"]), [broker.minted[0]])

    def test_credential_process(self):
        broker.reset([fb.aws_ok()])
        res = self.exchange("--format", "credential-process")
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(json.loads(res.out), broker.answers[0]["credentials"])
        self.assertEqual(list(json.loads(res.out)), ["Version", "AccessKeyId", "SecretAccessKey", "SessionToken",
                                                     "Expiration"])

    def test_credential_process_with_botocore(self):
        """AWS's own SDK accepts the output as a credential_process."""
        py = shutil.which("python3", path=os.environ.get("PATH"))
        if not py or subprocess.run([py, "-c", "import botocore.session"], capture_output=True).returncode:
            self.skipTest("no botocore")
        broker.reset([fb.aws_ok()])
        tok = GITLAB.id_token("https://broker.example.com")
        self.secret_inputs.append(tok)
        cfg = os.path.join(self.tmp, "aws-config")
        with open(cfg, "w") as f:
            f.write("[profile deploy]\ncredential_process = %s exchange --broker %s --audience web-deploy-aws "
                    "--format credential-process\n" % (BIN, broker.url))
        env = base_env()
        env.update({"AWS_CONFIG_FILE": cfg, "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.tmp, "none"),
                    "CIBROKER_ID_TOKEN": tok})
        code = ("import botocore.session; c = botocore.session.Session(profile='deploy').get_credentials()"
                ".get_frozen_credentials(); print(c.access_key, c.secret_key, c.token)")
        p = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        c = broker.answers[0]["credentials"]
        self.assertEqual(p.stdout.split(), [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]])

    def test_credential_process_needs_aws(self):
        # it asks for AWS credentials, so a jwt policy is refused before anything is minted
        res = self.exchange("--format", "credential-process")
        self.assertEqual(res.rc, 3, res.err)
        self.assertEqual(res.out, "")
        self.assertIn("requested_token_type does not fit", res.err)
        self.assertEqual(broker.minted, [])
        self.assertEqual(broker.token_requests()[0]["form"]["requested_token_type"],
                         ["urn:cibroker:token-type:aws-credentials"])
        # a broker that ignores requested_token_type and answers a jwt: still no output, exit 2
        broker.reset([fb.jwt_ok()], ignore_requested_type=True)
        res = self.exchange("--format", "credential-process")
        self.assertEqual(res.rc, 2, res.err)
        self.assertEqual(res.out, "")
        self.assertIn("policy 'web-deploy-prod' issued urn:ietf:params:oauth:token-type:jwt", res.err)

    def github_env(self, answer):
        broker.reset([answer])
        path = os.path.join(self.tmp, "github_env")
        with open(path, "w") as f:
            f.write("EARLIER=kept\n")
        env = actions_env()
        env["GITHUB_ENV"] = path
        res = self.exchange("--format", "github-env", env=env)
        self.assertEqual(res.rc, 0, res.err)
        with open(path) as f:
            return res, f.read()

    def check_github_env(self, res, content, expected):
        secrets = list(expected.values())
        # stdout is nothing but masks, one per secret, and they come first
        lines = res.out.splitlines()
        self.assertEqual(lines, ["::add-mask::" + v for v in secrets])
        self.assertTrue(content.startswith("EARLIER=kept\n"), "appends, keeps earlier lines")
        parsed = parse_github_env(content)
        self.assertEqual(parsed, dict(EARLIER="kept", **expected))
        delims = re.findall(r"^\w+<<(.*)$", content, re.M)
        self.assertEqual(len(delims), len(expected))
        for d in delims:
            self.assertRegex(d, r"^ghadelimiter_[0-9a-f]{32}$")
            for v in secrets:
                self.assertNotIn(d, v)
        self.assertNotIn(actions.issued[0], content)

    def test_github_env_jwt(self):
        res, content = self.github_env(fb.jwt_ok())
        self.check_github_env(res, content, {"CIBROKER_TOKEN": broker.minted[0]})

    def test_github_env_aws(self):
        res, content = self.github_env(fb.aws_ok())
        c = broker.answers[0]["credentials"]
        self.check_github_env(res, content, {"AWS_ACCESS_KEY_ID": c["AccessKeyId"],
                                             "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                                             "AWS_SESSION_TOKEN": c["SessionToken"]})

    def test_github_env_delimiter_is_random(self):
        _, a = self.github_env(fb.jwt_ok())
        _, b = self.github_env(fb.jwt_ok())
        self.assertNotEqual(re.findall("<<(.*)", a), re.findall("<<(.*)", b))

    def test_github_env_after_an_unterminated_line(self):
        broker.reset([fb.jwt_ok()])
        path = os.path.join(self.tmp, "github_env")
        with open(path, "w") as f:
            f.write("EARLIER=kept")  # no newline: a step wrote it with printf
        env = actions_env()
        env["GITHUB_ENV"] = path
        res = self.exchange("--format", "github-env", env=env)
        self.assertEqual(res.rc, 0, res.err)
        with open(path) as f:
            content = f.read()
        self.assertTrue(content.startswith("EARLIER=kept\nCIBROKER_TOKEN<<"), content[:80])
        self.assertEqual(parse_github_env(content), {"EARLIER": "kept", "CIBROKER_TOKEN": broker.minted[0]})

    def test_github_env_needs_the_variable(self):
        res = self.exchange("--format", "github-env")
        self.assertEqual(res.rc, 2)
        self.assertEqual(actions.requests, [], "fails before fetching any token")
        self.assertEqual(broker.requests, [])

    def test_github_env_needs_a_writable_file(self):
        # a missing file or a directory: usage error before any token is
        # fetched, so no credential is minted for nowhere
        for path in (os.path.join(self.tmp, "missing"), self.tmp):
            env = actions_env()
            env["GITHUB_ENV"] = path
            res = self.exchange("--format", "github-env", env=env)
            self.assertEqual(res.rc, 2, res.err)
            self.assertIn("cannot open $GITHUB_ENV", res.err)
            self.assertEqual(actions.requests, [], "fails before fetching any token")
            self.assertEqual(broker.requests, [])
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing")), "not created")


def parse_github_env(content):
    """The runner's parser for $GITHUB_ENV: NAME=value or NAME<<DELIM ... DELIM."""
    out, lines, i = {}, content.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            while lines[i] != delim:
                value.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            out[name] = value
    return out


class Failures(ClientTest):
    def test_retry_503_then_200(self):
        broker.reset([fb.error(503, "temporarily_unavailable", "no keys yet"), fb.jwt_ok()])
        res = self.exchange()
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(len(broker.token_requests()), 2)
        self.assertEqual(res.out, broker.minted[0] + "\n")

    def test_no_retry_on_429(self):
        # DESIGN.md: retries 503 and connection errors, never a 4xx; 429 is one
        broker.reset([fb.error(429, "temporarily_unavailable", "too many requests", headers={"Retry-After": "1"}),
                      fb.jwt_ok()])
        res = self.exchange()
        self.assertEqual(res.rc, 3, res.err)
        self.assertEqual(len(broker.token_requests()), 1)
        self.assertIn("too many requests", res.err)

    def test_no_retry_on_403(self):
        denied = fb.error(403, "access_denied", "claim 'ref' did not match")
        broker.reset([denied, fb.jwt_ok()])
        res = self.exchange()
        self.assertEqual(res.rc, 3)
        self.assertEqual(len(broker.token_requests()), 1)
        self.assertEqual(res.out, "")
        self.assertIn("cibroker exchange: access_denied: claim 'ref' did not match (request_id %s)\n"
                      % denied["body"]["request_id"], res.err)

    def test_no_retry_on_other_4xx(self):
        for status, err in [(400, "invalid_target"), (400, "invalid_request"), (413, "invalid_request")]:
            with self.subTest(status=status, err=err):
                broker.reset([fb.error(status, err, "nope"), fb.jwt_ok()])
                res = self.exchange()
                self.assertEqual(res.rc, 3)
                self.assertEqual(len(broker.token_requests()), 1)
                self.assertIn(err + ": nope (request_id ", res.err)

    def test_always_503_gives_up_in_bounded_time(self):
        broker.reset([fb.error(503, "temporarily_unavailable", "audit not writable")])
        res = self.exchange("--retry-max-time", "2", retry=None)
        self.assertEqual(res.rc, 4)
        self.assertLess(res.elapsed, 6)
        self.assertGreater(len(broker.token_requests()), 1)
        self.assertRegex(res.err, r"temporarily_unavailable: audit not writable \(request_id [\w-]+\)")
        self.assertIn("gave up after", res.err)

    def test_retry_budget_from_environment(self):
        broker.reset([fb.error(503, "temporarily_unavailable", "x")])
        res = self.exchange(retry="0")
        self.assertEqual(res.rc, 4)
        self.assertEqual(len(broker.token_requests()), 1)

    def test_connection_refused_is_unavailable(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        res = self.run_client("--broker", "http://127.0.0.1:%d" % port, "--audience", "p",
                              "--retry-max-time", "1", retry=None, env={"CIBROKER_ID_TOKEN": "a.b.c"})
        self.assertEqual(res.rc, 4)
        self.assertLess(res.elapsed, 6)
        self.assertIn("gave up after", res.err)

    def test_broken_answers_are_unavailable(self):
        big = fb.raw(200, "x" * (1024 * 1024 + 10))
        for answer in [fb.raw(200, "not json"), fb.raw(200, '{"token_type": "Bearer"}'), big,
                       fb.raw(502, "<html>bad gateway</html>"), fb.raw(500, '{"error": "server_error"}')]:
            with self.subTest(answer=answer["raw"][:30]):
                broker.reset([answer])
                res = self.exchange()
                self.assertEqual(res.rc, 4, res.err)
                self.assertEqual(res.out, "")
                self.assertEqual(len(broker.token_requests()), 1)

    def test_error_fields_cannot_forge_log_lines(self):
        broker.reset([fb.error(403, "access_denied", "x\n::add-mask::\r\n::error::forged")])
        res = self.exchange()
        self.assertEqual(res.rc, 3)
        for line in res.err.splitlines():
            self.assertTrue(line.startswith("cibroker exchange: "), line)

    def test_usage_errors(self):
        url = broker.url
        cases = [
            [],
            ["--audience", "p"],
            ["--broker", url],
            ["--broker", url, "--audience", "p", "--format", "yaml"],
            ["--broker", url, "--audience", "p", "--bogus"],
            ["--broker", url, "--audience", "p", "extra"],
            ["--broker", url, "--audience", ""],
            ["--broker", url, "--audience", "p", "--retry-max-time", "soon"],
            ["--broker", url, "--audience", "p", "--id-token-env", ""],
            ["--broker", url, "--audience"],
            ["--broker", "ftp://127.0.0.1/", "--audience", "p"],
            ["--broker", url + "/?x=1", "--audience", "p"],
            ["--broker", url + "#frag", "--audience", "p"],
            ["--broker", url, "--audience", "p", "--ca-file", os.path.join(self.tmp, "no-such-ca.pem")],
        ]
        for args in cases:
            with self.subTest(args=args):
                res = self.run_client(*args, env=actions_env())
                self.assertEqual(res.rc, 2, res.err)
                self.assertNotEqual(res.err, "")
        self.assertEqual(broker.requests, [])
        self.assertEqual(actions.requests, [])

    def test_scheme_and_localhost_are_case_insensitive(self):
        port = broker.url.rsplit(":", 1)[1]
        res = self.run_client("--broker", f"HTTP://LOCALHOST:{port}", "--audience", "web-deploy-prod",
                              env=actions_env())
        self.assertEqual(res.rc, 0, res.err)
        self.assertEqual(len(broker.token_requests()), 1)

    def test_cleartext_to_remote_broker_refused(self):
        for url in ["http://broker.example.com", "http://10.0.0.7:8080", "http://127.0.0.1.evil.example/",
                    "http://user@127.0.0.1/"]:
            with self.subTest(url=url):
                res = self.run_client("--broker", url, "--audience", "p", env=actions_env())
                self.assertEqual(res.rc, 2)
                self.assertIn("https://", res.err)
        self.assertEqual(actions.requests, [])

    def test_help_and_version(self):
        res = self.run_client("--help")
        self.assertEqual(res.rc, 0)
        self.assertIn("--id-token-audience", res.out)
        res = self.run_client("--version")
        self.assertEqual(res.rc, 0)
        self.assertRegex(res.out, r"^cibroker \S+\n$")


class Examples(ClientTest):
    """The examples, unchanged, with only their site URLs pointed at the
    stand-ins, run the way GitHub and GitLab would run them."""

    def site_overrides(self):
        return {"CIBROKER_URL": broker.url, "DEPLOY_URL": broker.url,
                "CIBROKER_DOWNLOAD_URL": broker.url + "/download/cibroker",
                "CIBROKER_SHA256": hashlib.sha256(broker.downloads["cibroker"]).hexdigest()}

    def fake_aws(self):
        """`aws` stand-in: records the credentials it was given."""
        bindir = os.path.join(self.tmp, "tools")
        os.makedirs(bindir, exist_ok=True)
        with open(os.path.join(bindir, "aws"), "w") as f:
            f.write('#!/bin/sh\nprintf "%%s\\n" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$AWS_SESSION_TOKEN" '
                    '"$*" > %s/aws.log\n' % self.tmp)
        os.chmod(os.path.join(bindir, "aws"), 0o755)
        return bindir

    def aws_log(self):
        with open(os.path.join(self.tmp, "aws.log")) as f:
            return f.read().splitlines()

    def run_github_job(self, job_name):
        with open(GH_EXAMPLE) as f:
            wf = yaml.safe_load(f)
        job = wf["jobs"][job_name]
        self.assertEqual(job["permissions"]["id-token"], "write")
        self.assertEqual(job["environment"], "production")
        runner_temp = os.path.join(self.tmp, "runner_temp")
        os.makedirs(runner_temp)
        gh_env, gh_path = os.path.join(self.tmp, "github_env"), os.path.join(self.tmp, "github_path")
        env_from_file, path_from_file = {}, []
        outputs = []
        for step in job["steps"]:
            if "uses" in step:
                continue
            for f in (gh_env, gh_path):
                open(f, "w").close()
            env = base_env()
            env["PATH"] = os.pathsep.join(path_from_file + [self.fake_aws(), env["PATH"]])
            env.update({k: str(v) for k, v in wf.get("env", {}).items()})
            env.update({k: str(v) for k, v in job.get("env", {}).items()})
            env.update({k: str(v) for k, v in step.get("env", {}).items()})
            env.update(self.site_overrides())
            env.update(actions_env())
            env.update({"CI": "true", "RUNNER_TEMP": runner_temp, "GITHUB_ENV": gh_env, "GITHUB_PATH": gh_path,
                        "GITHUB_REPOSITORY": "acme/web", "GITHUB_SHA": "0123456789abcdef" * 2 + "01234567"})
            env.update(env_from_file)
            p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                               env=env, capture_output=True, text=True, timeout=90, cwd=self.tmp)
            self.results = getattr(self, "results", []) + [Result(p, 0)]
            self.assertEqual(p.returncode, 0, "step %r: %s" % (step.get("name"), p.stderr))
            outputs.append((step.get("name"), p.stdout))
            with open(gh_env) as f:
                env_from_file.update(parse_github_env(f.read()))
            with open(gh_path) as f:
                path_from_file = [line for line in f.read().splitlines() if line] + path_from_file
        return outputs, env_from_file

    def test_github_actions_deploy_job(self):
        outputs, env = self.run_github_job("deploy")
        self.assertEqual(len(broker.minted), 1)
        self.assertEqual(env["CIBROKER_TOKEN"], broker.minted[0])
        self.assertEqual(broker.token_requests()[0]["form"]["audience"], ["web-deploy-prod"])
        self.assertEqual(actions.requests[0]["query"]["audience"], ["https://broker.example.com"])
        masks = [out for name, out in outputs if "::add-mask::" in out]
        self.assertEqual(masks, ["::add-mask::%s\n" % broker.minted[0]])
        self.assertEqual(len(broker.deployments), 1)
        self.assertTrue(broker.deployments[0]["authorized"])
        self.assertEqual(broker.deployments[0]["form"]["repository"], ["acme/web"])

    def test_github_actions_aws_job(self):
        broker.reset([fb.aws_ok()])
        outputs, env = self.run_github_job("deploy-aws")
        c = broker.answers[0]["credentials"]
        self.assertEqual(self.aws_log(), [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                                          "s3 sync ./public s3://acme-web-prod/ --delete"])
        masked = [line[len("::add-mask::"):] for _, out in outputs for line in out.splitlines()
                  if line.startswith("::add-mask::")]
        self.assertEqual(masked, [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]])

    def test_github_actions_denied_fails_the_job(self):
        broker.reset([fb.error(403, "access_denied", "claim 'environment' did not match")])
        with self.assertRaises(AssertionError) as cm:
            self.run_github_job("deploy")
        self.assertIn("access_denied: claim 'environment' did not match", str(cm.exception))
        self.assertEqual(broker.deployments, [])

    def run_gitlab_job(self, job_name):
        with open(GL_EXAMPLE) as f:
            ci = yaml.safe_load(f)
        job = dict(ci[ci[job_name]["extends"]], **ci[job_name])
        aud = job["id_tokens"]["CIBROKER_ID_TOKEN"]["aud"]
        tok = GITLAB.id_token(aud, sub="project_path:acme/web:ref_type:branch:ref:main")
        self.secret_inputs.append(tok)
        env = base_env()
        env["PATH"] = os.pathsep.join([self.fake_aws(), env["PATH"]])
        env.update({k: str(v) for k, v in ci.get("variables", {}).items()})
        env.update({k: str(v) for k, v in job.get("variables", {}).items()})
        env.update(self.site_overrides())
        env.update({"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": self.tmp, "CI_PROJECT_PATH": "acme/web",
                    "CI_COMMIT_SHA": "89abcdef" * 5, "CIBROKER_ID_TOKEN": tok})
        script = "\n".join(job.get("before_script", []) + job["script"])
        p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env,
                           capture_output=True, text=True, timeout=90, cwd=self.tmp)
        self.results = getattr(self, "results", []) + [Result(p, 0)]
        return p, tok

    def test_gitlab_deploy_job(self):
        p, tok = self.run_gitlab_job("deploy-production")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(broker.token_requests()[0]["form"]["subject_token"], [tok])
        self.assertEqual(len(broker.deployments), 1)
        self.assertTrue(broker.deployments[0]["authorized"])
        self.assertEqual(broker.deployments[0]["form"]["sha"], ["89abcdef" * 5])

    def test_gitlab_aws_job(self):
        broker.reset([fb.aws_ok()])
        p, _ = self.run_gitlab_job("deploy-aws")
        self.assertEqual(p.returncode, 0, p.stderr)
        c = broker.answers[0]["credentials"]
        self.assertEqual(self.aws_log()[:3], [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]])

    def test_gitlab_denied_fails_the_job(self):
        broker.reset([fb.error(403, "access_denied", "claim 'ref' did not match")])
        p, _ = self.run_gitlab_job("deploy-production")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("access_denied", p.stderr)
        self.assertEqual(broker.deployments, [])

    def deploy_sh(self, env, *args):
        e = base_env()
        e.update(env)
        p = subprocess.run(["sh", DEPLOY_SH, *args], env=e, capture_output=True, text=True, timeout=90)
        self.results = getattr(self, "results", []) + [Result(p, 0)]
        return p

    def test_deploy_sh_github(self):
        env = dict(actions_env(), CIBROKER_URL=broker.url)
        p = self.deploy_sh(env, "web-deploy-prod")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, broker.minted[0] + "\n")
        self.assertEqual(actions.requests[0]["query"]["audience"], ["https://broker.example.com"])
        self.assertEqual(actions.requests[0]["query"]["api-version"], ["2.0"])
        self.assert_form(broker.token_requests()[0], actions.issued[0])

    def test_deploy_sh_gitlab_and_deploy(self):
        tok = GITLAB.id_token("https://broker.example.com")
        self.secret_inputs.append(tok)
        p = self.deploy_sh({"CIBROKER_URL": broker.url, "CIBROKER_AUDIENCE": "web-deploy-prod",
                            "CIBROKER_ID_TOKEN": tok, "DEPLOY_URL": broker.url, "CI_COMMIT_SHA": "abc"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_form(broker.token_requests()[0], tok)
        self.assertEqual(broker.deployments[0]["form"]["sha"], ["abc"])
        self.assertTrue(broker.deployments[0]["authorized"])

    def test_deploy_sh_failures(self):
        denied = fb.error(403, "access_denied", "claim 'ref' did not match")
        broker.reset([denied])
        env = dict(actions_env(), CIBROKER_URL=broker.url)
        p = self.deploy_sh(env, "web-deploy-prod")
        self.assertEqual(p.returncode, 3)
        self.assertEqual(len(broker.token_requests()), 1)
        self.assertIn("access_denied: claim 'ref' did not match (request_id %s)" % denied["body"]["request_id"],
                      p.stderr)
        broker.reset([fb.error(503, "temporarily_unavailable", "x"), fb.jwt_ok()])
        p = self.deploy_sh(env, "web-deploy-prod")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(broker.token_requests()), 2)
        for url in ["http://broker.example.com", "http://127.0.0.1.evil.example"]:
            p = self.deploy_sh(dict(env, CIBROKER_URL=url), "web-deploy-prod")
            self.assertEqual(p.returncode, 2)
        p = self.deploy_sh({"CIBROKER_URL": broker.url}, "web-deploy-prod")
        self.assertEqual(p.returncode, 2)
        # a refused Actions token request is "refused" (3), as for the client
        p = self.deploy_sh(dict(env, ACTIONS_ID_TOKEN_REQUEST_TOKEN="not-the-runtime-token"), "web-deploy-prod")
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("HTTP 401", p.stderr)
        self.assertNotIn("not-the-runtime-token", p.stdout + p.stderr)


def main():
    if not os.access(BIN, os.X_OK):
        print("cibroker binary not found at %s (set CIBROKER_BIN)" % BIN, file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
