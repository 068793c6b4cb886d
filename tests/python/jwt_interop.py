#!/usr/bin/env python3
"""Tokens made and checked by someone else: PyJWT with the `cryptography` backend.

Usage:
  jwt_interop.py issue PRIVATE_KEY.pem CLAIMS_JSON [--kid KID] [--alg EdDSA|none|HS256]
      Print a compact JWT of CLAIMS_JSON (a JSON object; "nbf"/"exp" may be
      given relative to now as "+600" / "-60" strings). EdDSA signs with the
      Ed25519 key; "none" is unsigned; HS256 uses the bytes of the key file as
      an HMAC secret (an attack the node must refuse).
  jwt_interop.py verify PUBLIC_KEY.pem TOKEN AUDIENCE
      Verify TOKEN (EdDSA only) for AUDIENCE; print its claims as JSON, or
      the error and exit 1.
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key


def rel_time(v):
    if isinstance(v, str) and v[:1] in "+-":
        return int(time.time()) + int(v)
    return v


def issue(args):
    key_file, claims_json = args[0], args[1]
    kid = None
    alg = "EdDSA"
    rest = args[2:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--kid":
            kid = value
        elif flag == "--alg":
            alg = value
        else:
            raise SystemExit(f"unknown option {flag}")
    claims = json.loads(claims_json)
    for k in ("nbf", "exp", "iat"):
        if k in claims:
            claims[k] = rel_time(claims[k])
    headers = {"kid": kid} if kid else None
    pem = open(key_file, "rb").read()
    if alg == "EdDSA":
        key = load_pem_private_key(pem, password=None)
        token = jwt.encode(claims, key, algorithm="EdDSA", headers=headers)
    elif alg == "none":
        token = jwt.encode(claims, None, algorithm="none", headers=headers)
    elif alg == "HS256":
        # PyJWT refuses PEM text as an HMAC secret; an attacker would use the raw bytes.
        secret = pem.replace(b"-", b"").replace(b"\n", b"")
        token = jwt.encode(claims, secret, algorithm="HS256", headers=headers)
    else:
        raise SystemExit(f"unknown alg {alg}")
    print(token)
    return 0


def verify(args):
    pub_file, token, audience = args
    key = load_pem_public_key(open(pub_file, "rb").read())
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=audience,
            options={"require": ["exp", "nbf", "iss", "sub", "aud", "jti"]},
        )
    except jwt.PyJWTError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    header = jwt.get_unverified_header(token)
    print(json.dumps({"header": header, "claims": claims}))
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("issue", "verify"):
        print(__doc__, file=sys.stderr)
        return 2
    return issue(sys.argv[2:]) if sys.argv[1] == "issue" else verify(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
