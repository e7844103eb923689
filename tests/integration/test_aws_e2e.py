# SPDX-License-Identifier: Apache-2.0
"""aws credentials end to end: the real broker calls STS in moto (IAM
enforcement on, so moto checks every SigV4 signature and permission), and the
unmodified awscli, with a profile whose credential_process runs
`cibroker exchange --format credential-process`, uploads to the one bucket the
deploy role may write and is refused on another. STS errors and throttling
come from a scripted stand-in. Without moto the moto tests are skipped loudly,
never passed."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import BIN, HERE, REPO, Broker, Issuer, github_issuer_config, main


def path_python():
    """The python3 on PATH (the image's, with moto), not /usr/bin/python3."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d, "python3")
        if os.access(p, os.X_OK):
            return p
    return None


def aws_policy(name="aws-web", role_arn="", **extra):
    cred = {"type": "aws", "role_arn": role_arn, "ttl": "15m", "session_name": "gh-${run_id}",
            "source_identity": "${actor}", "session_tags": {"repository": "${repository}"}}
    cred.update(extra)
    return {"name": name, "issuer": "github",
            "allow": {"repository": "acme/web", "repository_id": "89221572", "ref": "refs/heads/main"},
            "credential": cred}


class MotoEnd2End(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        py = path_python()
        cls.moto = None
        if not py:
            raise unittest.SkipTest("no python3 on PATH")
        cls.moto = subprocess.Popen([py, os.path.join(HERE, "aws_env.py"), "serve"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        line = cls.moto.stdout.readline()
        if not line or line.startswith("SKIPPED"):
            cls.moto.stdin.close()
            cls.moto.wait()
            print("\n*** SKIPPED: moto not available to " + py + ": aws end-to-end tests did NOT run ***\n",
                  file=sys.stderr)
            raise unittest.SkipTest("moto not available")
        cls.env = json.loads(line)
        cls.issuer = Issuer().start()
        cls.broker = Broker([github_issuer_config(cls.issuer)], [
            aws_policy(role_arn=cls.env["deploy_role_arn"]),
            aws_policy(name="aws-other", role_arn=cls.env["other_role_arn"]),
        ], extra={"aws": {"sts_endpoint": cls.env["endpoint"], "region": cls.env["region"]}},
            env={"AWS_ACCESS_KEY_ID": cls.env["access_key_id"],
                 "AWS_SECRET_ACCESS_KEY": cls.env["secret_access_key"],
                 "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}).start()

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "broker", None):
            cls.broker.stop()
        if getattr(cls, "issuer", None):
            cls.issuer.stop()
        if cls.moto:
            cls.moto.stdin.close()
            cls.moto.wait(timeout=20)

    def test_exchange_returns_credential_process_json(self):
        r = self.broker.exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Cache-Control"], "no-store")
        body = r.json()
        self.assertEqual(body["issued_token_type"], "urn:cibroker:token-type:aws-credentials")
        self.assertEqual(body["token_type"], "N_A")
        self.assertEqual(body["expires_in"], 900)
        c = body["credentials"]
        self.assertEqual(sorted(c), ["AccessKeyId", "Expiration", "SecretAccessKey", "SessionToken", "Version"])
        self.assertEqual(c["Version"], 1)
        self.assertEqual(body["access_token"], c["SessionToken"])
        recs = [x for x in self.broker.audit_records() if x.get("credential") and x["credential"]["type"] == "aws"]
        self.assertTrue(any(x["credential"]["id"] == c["AccessKeyId"] for x in recs))
        rec = [x for x in recs if x["credential"]["id"] == c["AccessKeyId"]][0]
        # DESIGN.md's audit record: credential is {type, id, expires_at}, id the AccessKeyId
        self.assertEqual(sorted(rec["credential"]), ["expires_at", "id", "type"])
        self.assertEqual(rec["credential"]["expires_at"], c["Expiration"])
        with open(self.broker.audit_path) as f:
            raw = f.read()
        self.assertNotIn(c["SecretAccessKey"], raw)
        self.assertNotIn(c["SessionToken"], raw)

    def test_role_the_broker_may_not_assume_is_403(self):
        r = self.broker.exchange(self.issuer.mint(), "aws-other")
        self.assertEqual(r.status_code, 403, r.text)
        self.assertEqual(r.json()["error"], "access_denied")
        self.assertIn("AccessDenied", r.json()["error_description"])

    def test_awscli_credential_process_deploys_and_is_refused_elsewhere(self):
        aws = shutil.which("aws")
        if not aws:
            self.skipTest("awscli not installed")
        tmp = tempfile.mkdtemp()
        tok = os.path.join(tmp, "id-token")
        with open(tok, "w") as f:
            f.write(self.issuer.mint())
        cfg = os.path.join(tmp, "config")
        with open(cfg, "w") as f:
            f.write(f"[profile deploy]\nregion = {self.env['region']}\n"
                    f"credential_process = {BIN} exchange --broker {self.broker.url} --audience aws-web "
                    f"--format credential-process --id-token-file {tok}\n")
        artifact = os.path.join(tmp, "artifact.txt")
        with open(artifact, "w") as f:
            f.write("build output\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_CONFIG_FILE": cfg, "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tmp, "none"),
                    "AWS_PROFILE": "deploy", "AWS_EC2_METADATA_DISABLED": "true"})
        ep = ["--endpoint-url", self.env["endpoint"]]
        ok = subprocess.run([aws, *ep, "s3", "cp", artifact, f"s3://{self.env['bucket']}/web/artifact.txt"],
                            env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        who = subprocess.run([aws, *ep, "sts", "get-caller-identity"], env=env, capture_output=True, text=True,
                             timeout=120)
        if who.returncode == 0:  # the deploy role may not call it under enforcement; either way no leak
            self.assertIn("deploy-web", who.stdout)
        bad = subprocess.run([aws, *ep, "s3", "cp", artifact, f"s3://{self.env['other_bucket']}/x.txt"],
                             env=env, capture_output=True, text=True, timeout=120)
        self.assertNotEqual(bad.returncode, 0, bad.stdout)
        self.assertIn("AccessDenied", bad.stderr)

    def test_wrong_broker_secret_is_503_and_audited(self):
        b = Broker([github_issuer_config(self.issuer)], [aws_policy(role_arn=self.env["deploy_role_arn"])],
                   extra={"aws": {"sts_endpoint": self.env["endpoint"], "region": self.env["region"]}},
                   env={"AWS_ACCESS_KEY_ID": self.env["access_key_id"], "AWS_SECRET_ACCESS_KEY": "wrong" * 8,
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
        self.addCleanup(b.stop)
        b.start()
        r = b.exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 503, r.text)
        self.assertNotIn("credentials", r.json())
        rec = [x for x in b.audit_records() if x["request_id"] == r.json()["request_id"]][0]
        self.assertEqual(rec["decision"], "deny")
        self.assertIn("SignatureDoesNotMatch", rec["reason"])


class StsStandIn(unittest.TestCase):
    """Answers moto cannot give: throttling, server errors."""

    @classmethod
    def setUpClass(cls):
        cls.sts = subprocess.Popen(["/usr/bin/python3", os.path.join(REPO, "tests", "fixtures", "sts_standin.py")],
                                   stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
        first = cls.sts.stdout.readline().strip()
        cls.base = first if first.startswith("http") else f"http://127.0.0.1:{first}"
        cls.issuer = Issuer().start()

    @classmethod
    def tearDownClass(cls):
        cls.issuer.stop()
        cls.sts.terminate()
        cls.sts.wait(timeout=10)

    def broker(self, scenario):
        b = Broker([github_issuer_config(self.issuer)], [aws_policy(role_arn="arn:aws:iam::123456789012:role/x")],
                   extra={"aws": {"sts_endpoint": f"{self.base}/{scenario}", "region": "us-east-1"}},
                   env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
        self.addCleanup(b.stop)
        return b.start()

    def test_throttling_is_503_with_retry_after(self):
        r = self.broker("throttle-ra").exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 503, r.text)
        self.assertEqual(r.json()["error"], "temporarily_unavailable")
        self.assertGreaterEqual(int(r.headers.get("Retry-After", "0")), 1)

    def test_server_error_is_503(self):
        r = self.broker("500").exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 503, r.text)

    def test_denied_is_403_with_sts_code(self):
        r = self.broker("denied").exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 403, r.text)
        self.assertIn("AccessDenied", r.json()["error_description"])

    def test_success_shape(self):
        r = self.broker("ok").exchange(self.issuer.mint(), "aws-web")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["credentials"]["Version"], 1)


if __name__ == "__main__":
    main()
