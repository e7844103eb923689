#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Independent check of the broker's minted JWTs and keys (PyJWT + cryptography).

  mint-verify.py verify JWKS_FILE TOKEN_FILE --iss I --aud A --sub S --policy P --ttl N [--claim K=V ...]
      Every non-empty line of TOKEN_FILE must be a token that PyJWT verifies
      with ES256 against the JWKS entry named by its kid, with the exact header
      the contract specifies, the expected claims, and a kid that is the
      RFC 7638 thumbprint of that JWK (computed here, not by the broker).
  mint-verify.py thumbprint PEM_FILE
      Prints the RFC 7638 thumbprint of a PEM private key's public half.

Exit status: 0 all good, 1 a check failed, 2 usage.
"""
import argparse
import base64
import hashlib
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

RESERVED = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "policy", "ci")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint_ec(x, y):
    canon = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canon.encode()).digest())


def cmd_thumbprint(args):
    with open(args.pem, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        print("not a P-256 key", file=sys.stderr)
        return 1
    nums = key.public_key().public_numbers()
    print(thumbprint_ec(b64url(nums.x.to_bytes(32, "big")), b64url(nums.y.to_bytes(32, "big"))))
    return 0


def check_jwks(jwks):
    keys = {}
    for jwk in jwks["keys"]:
        want = {"kty", "crv", "x", "y", "use", "alg", "kid"}
        if set(jwk) != want:
            raise ValueError("JWK members %s, expected %s" % (sorted(jwk), sorted(want)))
        if (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) != ("EC", "P-256", "sig", "ES256"):
            raise ValueError("JWK %s has wrong kty/crv/use/alg" % jwk["kid"])
        if "d" in jwk:
            raise ValueError("JWKS publishes a private key")
        if len(b64url_decode(jwk["x"])) != 32 or len(b64url_decode(jwk["y"])) != 32:
            raise ValueError("JWK coordinates are not 32 bytes")
        if thumbprint_ec(jwk["x"], jwk["y"]) != jwk["kid"]:
            raise ValueError("kid %s is not the RFC 7638 thumbprint" % jwk["kid"])
        keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="ES256")
    return keys


def check_token(token, keys, args):
    header_text = b64url_decode(token.split(".")[0])
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    if kid not in keys:
        raise ValueError("kid %r not in the JWKS" % kid)
    expected = '{"alg":"ES256","typ":"JWT","kid":"%s"}' % kid
    if header_text.decode() != expected:
        raise ValueError("header %r, expected %r" % (header_text, expected))
    if len(b64url_decode(token.split(".")[2])) != 64:
        raise ValueError("ES256 signature is not 64 bytes r||s")
    claims = jwt.decode(
        token,
        keys[kid].key,
        algorithms=["ES256"],
        audience=args.aud,
        issuer=args.iss,
        options={"require": list(RESERVED[:7])},
        leeway=5,
    )
    for name in RESERVED:
        if name not in claims:
            raise ValueError("claim %s missing" % name)
    if claims["sub"] != args.sub or claims["policy"] != args.policy:
        raise ValueError("sub/policy %r/%r" % (claims["sub"], claims["policy"]))
    if claims["exp"] - claims["iat"] != args.ttl or claims["nbf"] != claims["iat"]:
        raise ValueError("exp/iat/nbf inconsistent with ttl %d" % args.ttl)
    if not isinstance(claims["ci"], dict) or "iss" not in claims["ci"] or "sub" not in claims["ci"]:
        raise ValueError("ci is not an object with iss and sub")
    if len(claims["jti"]) != 22 or len(b64url_decode(claims["jti"])) != 16:
        raise ValueError("jti %r is not 128 bits base64url" % claims["jti"])
    for kv in args.claim or []:
        name, _, value = kv.partition("=")
        if str(claims.get(name)) != value:
            raise ValueError("claim %s = %r, expected %r" % (name, claims.get(name), value))
    return claims


def cmd_verify(args):
    with open(args.jwks) as f:
        keys = check_jwks(json.load(f))
    with open(args.tokens) as f:
        tokens = [line.strip() for line in f if line.strip()]
    if not tokens:
        print("no tokens", file=sys.stderr)
        return 1
    failed = 0
    for i, token in enumerate(tokens):
        try:
            check_token(token, keys, args)
        except Exception as e:  # every failure, whatever PyJWT raises
            if failed < 3:
                print("token %d: %s: %s" % (i + 1, type(e).__name__, e), file=sys.stderr)
            failed += 1
    # Not "N passed, N failed": the calling unit test owns that line.
    print("mint-verify: %d of %d tokens verified" % (len(tokens) - failed, len(tokens)))
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("jwks")
    v.add_argument("tokens")
    v.add_argument("--iss", required=True)
    v.add_argument("--aud", required=True)
    v.add_argument("--sub", required=True)
    v.add_argument("--policy", required=True)
    v.add_argument("--ttl", type=int, required=True)
    v.add_argument("--claim", action="append")
    t = sub.add_parser("thumbprint")
    t.add_argument("pem")
    args = p.parse_args()
    try:
        return cmd_verify(args) if args.cmd == "verify" else cmd_thumbprint(args)
    except Exception as e:
        print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
