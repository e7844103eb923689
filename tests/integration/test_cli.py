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


def write_file(path, data, mode=0o644):
    """Create path with mode from the start (a key is never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


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
        return write_file(os.path.join(tmp, "config.yaml"), text)

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
        write_file(bad, "notakey\n", 0o600)
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
        write_file(creds, "[other]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n")
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

    def test_listen_address_refused_with_position(self):
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)
        for listen, why in (("300.0.0.1:8080", "IPv4 address"), ("example.com:8080", "IPv4 address"),
                            ("*:8080", "IPv4 address"), ("[127.0.0.1]:8080", "IPv6 address"),
                            ("127.0.0.1:70000", "0-65535"), ("::1:8080", "HOST:PORT")):
            path = self.write_config(tmp, f'listen: "{listen}"\npublic_url: https://b.example\n'
                                     f"signing: {{keys: [{key}]}}\npolicies: policies\n")
            for cmd in (["serve"], ["policy", "check"]):
                r = run(*cmd, "--config", path)
                self.assertEqual(r.returncode, 1, (listen, cmd))
                self.assertIn(f"{path}:1:9: listen: '{listen}'", r.stderr)
                self.assertIn(why, r.stderr)

    def test_policy_check_reads_what_serve_reads_at_start(self):
        # key contents and the TLS pair: a check that passes must not leave serve to fail
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        import datetime
        tmp = tempfile.mkdtemp()
        key = self.base(tmp)

        def pair(name):
            k = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(k.public_key())
                    .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                    .sign(k, hashes.SHA256()))
            c, kp = os.path.join(tmp, name + ".crt"), os.path.join(tmp, name + ".key")
            write_file(c, cert.public_bytes(serialization.Encoding.PEM))
            write_file(kp, k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
            return c, kp

        c1, k1 = pair("a")
        c2, k2 = pair("b")
        junk = write_file(os.path.join(tmp, "junk.pem"), b"garbage\n", 0o600)
        base = f"public_url: https://b.example\npolicies: policies\naudit: {{path: {tmp}/audit.jsonl}}\n"
        cases = [
            (f"signing: {{keys: [{key}]}}\ntls: {{cert: {c1}, key: {k1}}}\n", None),
            (f"signing: {{keys: [{key}, {junk}]}}\n", ":4:"),
            (f"signing: {{keys: [{key}, {key}]}}\n", "same key as an earlier entry"),
            (f"signing: {{keys: [{', '.join([key] * 17)}]}}\n", "needs 1 to 16 key files, not 17"),
            (f"signing: {{keys: [{key}]}}\ntls: {{cert: {c1}, key: {k2}}}\n", "is not the key of the certificate"),
            (f"signing: {{keys: [{key}]}}\ntls: {{cert: {junk}, key: {k1}}}\n", "holds no PEM certificate"),
            (f"signing: {{keys: [{key}]}}\ntls: {{cert: {c1}, key: {junk}}}\n", "holds no PEM private key"),
        ]
        for body, needle in cases:
            path = self.write_config(tmp, base + body)
            r = run("policy", "check", "--config", path)
            if needle is None:
                self.assertEqual(r.returncode, 0, r.stderr)
                continue
            self.assertEqual(r.returncode, 1, (body, r.stderr))
            self.assertIn(needle, r.stderr)
            self.assertRegex(r.stderr, re.escape(path) + r":\d+:\d+: ")
            s = run("serve", "--config", path)
            self.assertEqual(s.returncode, 1, (body, s.stderr))
            self.assertIn(needle, s.stderr)

    def test_dev_listen_loopback_and_explicit_port(self):
        for listen, why in (("0.0.0.0:18110", "loopback only"), ("[::2]:18110", "loopback only"),
                            ("127.0.0.1:0", "explicit port"), ("127.0.0.1:99999", "0-65535"),
                            ("bogus", "HOST:PORT"), ("127.0.0.1", "HOST:PORT")):
            r = run("dev", "--listen", listen, "--no-demo")
            self.assertEqual(r.returncode, 2, (listen, r.stderr))
            self.assertIn(why, r.stderr)

    def test_dev_refuses_an_audience_with_no_policy(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = run("dev", "--listen", f"127.0.0.1:{port}", "--audience", "nope")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--audience 'nope' names no policy; the loaded ones are:", r.stderr)
        self.assertIn("api-deploy-prod", r.stderr)

    def test_audit_verify_names_why_it_cannot_read(self):
        tmp = tempfile.mkdtemp()
        r = run("audit", "verify", tmp)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{tmp}: Is a directory", r.stderr)
        r = run("audit", "verify", os.path.join(tmp, "missing.jsonl"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("No such file or directory", r.stderr)

    def test_keygen_mode_and_kid(self):
        tmp = tempfile.mkdtemp()
        p = os.path.join(tmp, "new.pem")
        kid = keygen(p)
        self.assertRegex(kid, r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(os.stat(p).st_mode & 0o777, 0o600)
        self.assertNotEqual(run("keygen", "--out", p).returncode, 0, "refuses to overwrite")


if __name__ == "__main__":
    main()
