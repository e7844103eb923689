#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""moto with IAM enforcement, set up for cibroker's `aws` credential tests.

moto (the AWS emulator in the image's PATH python3, moto 5.2.1) checks every
SigV4 signature and IAM permission itself once its first
INITIAL_NO_AUTH_ACTION_COUNT actions are spent. We spend exactly those on
the setup below, then prove enforcement is on with a call that must fail.

    account 123456789012, region us-east-1
    user  broker         access keys; may only sts:AssumeRole role/deploy-web
    role  deploy-web     trusted by user/broker (and by the web-identity
                         session below); may only s3:PutObject into
                         deploy-web-artifacts
    role  other-role     trusted by user/broker, but broker's own policy
                         does not allow assuming it (-> AccessDenied)
    role  broker-web     the broker's identity when it runs with
                         AWS_WEB_IDENTITY_TOKEN_FILE (EKS style); may only
                         sts:AssumeRole role/deploy-web
    buckets deploy-web-artifacts, other-bucket

As a module (from the PATH python3, which has moto and boto3):
    import aws_env
    env = aws_env.start()            # raises aws_env.Unavailable without moto
    env.endpoint, env.broker_key_id, env.broker_secret, env.deploy_role_arn
    env.allow_unauthenticated(1)     # next action unchecked (web identity)
    env.stop()

As a script (used by tests/unit/test-aws.c):
    python3 aws_env.py serve
prints one JSON line with the fields of MotoEnv.info() and serves until its
stdin closes, then stops moto. Exits 77 (meson's skip code) after printing
"SKIPPED: moto not available" when moto/boto3 cannot be imported.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "deploy-web-artifacts"
OTHER_BUCKET = "other-bucket"
WEB_SESSION_NAME = "cibroker-web"


class Unavailable(Exception):
    """moto or boto3 is not importable by this interpreter."""


def moto_available():
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except Exception:
        return False
    return True


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _arn(kind, name):
    return f"arn:aws:iam::{ACCOUNT}:{kind}/{name}"


def _doc(statements):
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class MotoEnv:
    def __init__(self, proc, port, log):
        self.proc = proc
        self.port = port
        self.log = log
        self.endpoint = f"http://127.0.0.1:{port}"
        self.region = REGION
        self.broker_key_id = None
        self.broker_secret = None
        self.deploy_role_arn = _arn("role", "deploy-web")
        self.other_role_arn = _arn("role", "other-role")
        self.web_role_arn = _arn("role", "broker-web")
        self.web_session_name = WEB_SESSION_NAME
        self.bucket = BUCKET
        self.other_bucket = OTHER_BUCKET

    def info(self):
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.broker_key_id,
            "secret_access_key": self.broker_secret,
            "deploy_role_arn": self.deploy_role_arn,
            "other_role_arn": self.other_role_arn,
            "web_role_arn": self.web_role_arn,
            "web_session_name": self.web_session_name,
            "bucket": self.bucket,
            "other_bucket": self.other_bucket,
            "pid": self.proc.pid,
        }

    def allow_unauthenticated(self, n):
        """Let the next n actions through unchecked (moto's reset-auth); e.g.
        AssumeRoleWithWebIdentity, which is unsigned by design but which moto
        5.2.1 cannot serve with enforcement on."""
        req = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth", data=str(n).encode(),
            headers={"Content-Type": "text/plain"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _setup_steps(iam, s3, env):
    """Each step is exactly one moto action (counted against
    INITIAL_NO_AUTH_ACTION_COUNT)."""
    web_principal = f"arn:aws:sts::{ACCOUNT}:assumed-role/broker-web/{WEB_SESSION_NAME}"
    assume_deploy = _doc([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": env.deploy_role_arn}])

    def keys():
        k = iam.create_access_key(UserName="broker")["AccessKey"]
        env.broker_key_id, env.broker_secret = k["AccessKeyId"], k["SecretAccessKey"]

    return [
        lambda: iam.create_user(UserName="broker"),
        keys,
        lambda: iam.put_user_policy(UserName="broker", PolicyName="assume-deploy-web",
                                    PolicyDocument=assume_deploy),
        lambda: iam.create_role(RoleName="deploy-web", AssumeRolePolicyDocument=_doc([{
            "Effect": "Allow",
            "Principal": {"AWS": [_arn("user", "broker"), web_principal]},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}])),
        lambda: iam.put_role_policy(RoleName="deploy-web", PolicyName="put-artifacts", PolicyDocument=_doc([{
            "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}])),
        lambda: iam.create_role(RoleName="other-role", AssumeRolePolicyDocument=_doc([{
            "Effect": "Allow", "Principal": {"AWS": _arn("user", "broker")}, "Action": "sts:AssumeRole"}])),
        lambda: iam.create_role(RoleName="broker-web", AssumeRolePolicyDocument=_doc([{
            "Effect": "Allow",
            "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.example"},
            "Action": "sts:AssumeRoleWithWebIdentity"}])),
        lambda: iam.put_role_policy(RoleName="broker-web", PolicyName="assume-deploy-web",
                                    PolicyDocument=assume_deploy),
        lambda: s3.create_bucket(Bucket=BUCKET),
        lambda: s3.create_bucket(Bucket=OTHER_BUCKET),
    ]


def start(timeout=30):
    """Start moto on 127.0.0.1 with IAM enforcement and the setup above."""
    if not moto_available():
        raise Unavailable("moto/boto3 not importable by " + sys.executable)
    import boto3
    from botocore.config import Config

    port = _free_port()
    log = tempfile.TemporaryFile()
    # Setup clients sign with throwaway keys: moto does not check them while
    # the no-auth allowance lasts.
    cfg = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
               aws_access_key_id="AKIASETUP0000000000", aws_secret_access_key="setup",
               config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    iam, s3 = boto3.client("iam", **cfg), boto3.client("s3", **cfg)
    proc = None
    env = None
    try:
        # Count the steps first (the lambdas only run later).
        n_steps = len(_setup_steps(iam, s3, MotoEnv(None, port, log)))
        child_env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(n_steps))
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            child_env.pop(k, None)
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env)
        env = MotoEnv(proc, port, log)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError("moto_server exited early")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        for step in _setup_steps(iam, s3, env):
            step()
        # Enforcement must be on now: unknown keys are refused.
        probe = boto3.client("iam", **cfg)
        try:
            probe.list_users()
        except probe.exceptions.ClientError as e:
            if e.response["Error"]["Code"] != "InvalidClientTokenId":
                raise
        else:
            raise RuntimeError("moto IAM enforcement is not active")
        return env
    except BaseException:
        if env:
            env.stop()
        elif proc:
            proc.kill()
            proc.wait()
        raise


def main(argv):
    if len(argv) != 2 or argv[1] != "serve":
        print("usage: aws_env.py serve", file=sys.stderr)
        return 2
    if not moto_available():
        print("SKIPPED: moto not available (" + sys.executable + ")", flush=True)
        return 77
    env = start()
    try:
        print(json.dumps(env.info()), flush=True)
        # Serve until our parent closes stdin (or dies).
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
