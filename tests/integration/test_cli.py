# SPDX-License-Identifier: Apache-2.0
"""The binary's command line: --help and --version on every command, usage
errors exit 2, and `serve` refusing bad configs with FILE:LINE:COL."""
import os
import re
import subprocess
import tempfile
import unittest

from harness import BIN, keygen, main

COMMANDS = [[], ["serve"], ["dev"], ["policy"], ["policy", "check"], ["policy", "test"], ["policy", "explain"],
            ["keygen"], ["audit"], ["audit", "verify"], ["exchange"]]


def run(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, **kw)


class CliTest(unittest.TestCase):
    def test_help_and_version_everywhere(self):
        for cmd in COMMANDS:
            with self.subTest(cmd=cmd):
                h = run(*cmd, "--help")
                self.assertEqual(h.returncode, 0, h.stderr)
                self.assertIn("usage", (h.stdout + h.stderr).lower())
                v = run(*cmd, "--version")
                self.assertEqual(v.returncode, 0, v.stderr)
                self.assertRegex(v.stdout, r"^cibroker \d+\.\d+\.\d+")

    def test_usage_errors_exit_2(self):
        for args in (["nope"], ["serve"], ["serve", "--bogus"], ["keygen"], ["audit", "verify"], ["policy", "frob"]):
            with self.subTest(args=args):
                self.assertEqual(run(*args).returncode, 2)

    def write_config(self, tmp, text):
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def base(self, tmp):
        key = os.path.join(tmp, "k.pem")
        keygen(key)
        os.mkdir(os.path.join(tmp, "policies"))
        return key

    def test_serve_refuses_misspelt_key_with_position(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        path = self.write_config(tmp, f"""public_url: https://broker.example.com
signing:
  keys: [{key}]
policies: policies
audit:
  path: {tmp}/audit.jsonl
  snyc: always
""")
        r = run("serve", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:7:3:", r.stderr)
        self.assertIn("snyc", r.stderr)
        self.assertFalse(os.path.exists(f"{tmp}/audit.jsonl"), "refused config must not open the audit log")

    def test_serve_refuses_group_readable_key(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        os.chmod(key, 0o640)
        path = self.write_config(tmp, f"public_url: https://b.example\nsigning:\n  keys: [{key}]\npolicies: policies\n")
        r = run("serve", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, re.escape(path) + r":3:\d+:")
        self.assertIn("group or others", r.stderr)

    def test_serve_positions_a_key_file_that_is_no_key(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        bad = os.path.join(tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("notakey\n")
        os.chmod(bad, 0o600)
        path = self.write_config(tmp, f"public_url: https://b.example\nsigning:\n  keys:\n    - {key}\n    - {bad}\n"
                                 f"policies: policies\naudit: {{path: {tmp}/audit.jsonl}}\n")
        r = run("serve", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:5:7: signing.keys[1]: {bad}: not a PEM private key", r.stderr)

    def test_serve_positions_an_audit_log_it_cannot_open(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        path = self.write_config(tmp, f"public_url: https://b.example\nsigning: {{keys: [{key}]}}\n"
                                 f"policies: policies\naudit:\n  path: {tmp}/no/such/dir/audit.jsonl\n")
        r = run("serve", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:5:9: audit.path: cannot open audit log '{tmp}/no/such/dir/audit.jsonl': "
                      "No such file or directory", r.stderr)

    def test_serve_positions_an_unknown_aws_profile(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        creds = os.path.join(tmp, "credentials")
        with open(creds, "w") as f:
            f.write("[other]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n")
        path = self.write_config(tmp, f"public_url: https://b.example\nsigning: {{keys: [{key}]}}\n"
                                 f"policies: policies\naudit: {{path: {tmp}/audit.jsonl}}\n"
                                 "aws:\n  region: eu-west-1\n  profile: nope\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_SHARED_CREDENTIALS_FILE"] = creds
        r = run("serve", "--config", path, env=env)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, re.escape(path) + r":7:12: aws\.profile: .*not found.*\(profile 'nope'\)")
        self.assertNotIn("secret", r.stderr)

    def test_serve_reports_every_error_of_a_file(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        path = self.write_config(tmp, f"""public_url: http://broker.example.com
signing: {{keys: [{key}]}}
policies: policies
issuers:
  - name: gh
    issuer: https://token.actions.githubusercontent.com
    algorithms: [HS256]
    clock_skew: 10m
limits: {{max_body: lots}}
""")
        r = run("serve", "--config", path)
        self.assertEqual(r.returncode, 1)
        lines = [l for l in r.stderr.splitlines() if l.startswith(path + ":")]
        self.assertGreaterEqual(len(lines), 4, r.stderr)
        for needle in (":1:", ":7:", ":8:", ":9:"):
            self.assertTrue(any(needle in l for l in lines), f"{needle} in {r.stderr}")

    def test_keygen_mode_and_kid(self):
        tmp = tempfile.mkdtemp()
        p = os.path.join(tmp, "new.pem")
        kid = keygen(p)
        self.assertRegex(kid, r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(os.stat(p).st_mode & 0o777, 0o600)
        self.assertNotEqual(run("keygen", "--out", p).returncode, 0, "refuses to overwrite")


if __name__ == "__main__":
    main()
