# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the integration tests: the real cibroker binary started
with a generated config, a loopback OIDC issuer, and a unittest main that
ends with the "N passed, N failed" line tests/run.sh sums up."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))

from oidc_issuer import Issuer  # noqa: E402

BIN = os.environ.get("CIBROKER_BIN", os.path.join(REPO, "build", "cibroker"))
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    out = subprocess.run([BIN, "keygen", "--out", path], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def yaml_dump(obj):
    # JSON is valid YAML flow syntax; keeps the tests free of a YAML writer.
    return json.dumps(obj, indent=1)


class Broker:
    """`cibroker serve` on a free loopback port with a config built from
    keyword arguments. Stops itself (SIGTERM) at stop() or test teardown."""

    def __init__(self, issuers, policies, audit_sync="always", extra=None, keys=1, audit_path=None,
                 env=None, public_url=None):
        self.dir = tempfile.mkdtemp(prefix="cibroker-it-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.public_url = public_url or self.url
        self.key_paths = []
        self.kids = []
        for i in range(keys):
            p = os.path.join(self.dir, f"key{i}.pem")
            self.kids.append(keygen(p))
            self.key_paths.append(p)
        pol_dir = os.path.join(self.dir, "policies")
        os.mkdir(pol_dir)
        for i, pol in enumerate(policies):
            with open(os.path.join(pol_dir, f"p{i:03d}.yaml"), "w") as f:
                f.write(yaml_dump(pol))
        self.audit_path = audit_path or os.path.join(self.dir, "audit.jsonl")
        self.config = {
            "listen": f"127.0.0.1:{self.port}",
            "public_url": self.public_url,
            "signing": {"keys": self.key_paths},
            "issuers": issuers,
            "policies": pol_dir,
            "audit": {"path": self.audit_path, "sync": audit_sync},
        }
        if extra:
            self.config.update(extra)
        self.config_path = os.path.join(self.dir, "config.yaml")
        self.write_config()
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "stderr.log")

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(yaml_dump(self.config))

    def start(self, wait_ready=True, timeout=20):
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config_path], stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=self.env)
        deadline = time.time() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cibroker exited {self.proc.returncode}: {self.log()}")
            try:
                if requests.get(self.url + path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cibroker not {'ready' if wait_ready else 'up'}: {self.log()}")

    def log(self):
        try:
            with open(self.stderr_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "stderr", None):
            self.stderr.close()
        return self.proc.returncode if self.proc else None

    def exchange(self, token, audience, **extra):
        form = {"grant_type": GRANT, "subject_token": token, "subject_token_type": JWT_TYPE, "audience": audience}
        form.update(extra)
        form = {k: v for k, v in form.items() if v is not None}
        return requests.post(self.url + "/v1/token", data=form, timeout=30)

    def audit_records(self):
        with open(self.audit_path, "rb") as f:
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def minted_jti(answer):
    """The jti of the access token in a 200 answer (signature not checked here)."""
    import jwt
    return jwt.decode(answer["access_token"], options={"verify_signature": False})["jti"]


def audited_credential_ids(*paths):
    """Credential ids of every parseable record in the given audit logs; a torn
    last line (cut by a crash, never answered) is skipped."""
    ids = set()
    for path in paths:
        with open(path, "rb") as f:
            for line in f.read().split(b"\n"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("credential"):
                    ids.add(rec["credential"]["id"])
    return ids


def github_issuer_config(issuer, name="github", **kw):
    cfg = {"name": name, "issuer": issuer.url, "audiences": ["https://broker.test"],
           "jwks_min_refetch": "1s"}
    cfg.update(kw)
    return cfg


def jwt_policy(name="web-deploy-prod", issuer="github", allow=None, deny=None, **cred):
    c = {"type": "jwt", "audience": "https://deploy.acme.internal", "ttl": "5m"}
    c.update(cred)
    p = {"name": name, "issuer": issuer,
         "allow": allow or {"repository": "acme/web", "repository_id": "89221572", "ref": "refs/heads/main"},
         "credential": c}
    if deny:
        p["deny"] = deny
    return p


class Result(unittest.TextTestResult):
    pass


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    sys.exit(1 if failed else 0)
