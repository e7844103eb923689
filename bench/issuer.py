#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Loopback issuer for the benchmark.

Starts tests/fixtures/oidc_issuer.py's Issuer, mints N distinct valid
GitHub-shaped ID tokens (random jti each, RS256, long exp, iat = now) and
writes them one per line to OUT. With --ghosts, also writes tokens whose kid
is not in the issuer's JWKS (signed by the real key): each one makes the
broker attempt an unknown-kid JWKS refetch, rate limited by the broker to one
per jwks_min_refetch, which is how the bench forces refreshes under load.

Prints the issuer URL on stdout once the files are written, then serves
until stdin closes (it dies with the driver) or SIGTERM.
"""

import argparse
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fixtures"))

from oidc_issuer import Issuer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--ghosts", type=int, default=0)
    ap.add_argument("--exp", type=int, default=1800, help="token lifetime in seconds")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ghost-out")
    ap.add_argument("--audience", default="https://broker.test")
    args = ap.parse_args()

    iss = Issuer().start()
    claims = {"aud": args.audience}

    def mint(i):
        # A distinct run_id per token too, so no two request bodies repeat.
        return iss.mint(dict(claims, run_id=str(9000000000 + i)), exp_in=args.exp)

    def ghost(i):
        return iss.mint(dict(claims, run_id=str(8000000000 + i)), exp_in=args.exp,
                        headers={"kid": "ghost-%d" % i})

    # cryptography releases the GIL while signing: a small pool helps on 2 cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        toks = list(ex.map(mint, range(args.tokens)))
        ghosts = list(ex.map(ghost, range(args.ghosts)))
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(toks) + "\n")
    os.rename(tmp, args.out)
    if args.ghost_out:
        with open(args.ghost_out, "w") as f:
            f.write("\n".join(ghosts) + "\n")
    print(iss.url, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: (iss.stop(), os._exit(0)))
    try:
        while sys.stdin.read(1):
            pass
    except KeyboardInterrupt:
        pass
    iss.stop()


if __name__ == "__main__":
    main()
