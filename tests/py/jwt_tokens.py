#!/usr/bin/env python3
"""Keys and tokens for the edge's JWT tests (PyJWT + cryptography).

  jwt_tokens.py keys DIR     RSA, EC P-256 and Ed25519 keys in DIR, their
                             public halves in DIR/jwks.json (kids rsa1, ec1, ed1)
  jwt_tokens.py rotate DIR   a new RSA key (kid rsa2) replaces rsa1 in jwks.json
  jwt_tokens.py tokens DIR   good and forged tokens, by name, as one JSON line

Claims of a good token: iss https://issuer.test, aud mesh-api, sub alice,
scope "read write", exp in 5 minutes.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test"
AUDIENCE = "mesh-api"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def save(directory, kid, key):
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(directory, kid + ".pem"), "wb") as f:
        f.write(pem)


def load(directory, kid):
    path = os.path.join(directory, kid + ".pem")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def jwk(kid, key):
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        doc, alg = RSAAlgorithm.to_jwk(public), "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        doc, alg = ECAlgorithm.to_jwk(public), "ES256"
    else:
        doc, alg = OKPAlgorithm.to_jwk(public), "EdDSA"
    doc = json.loads(doc) if isinstance(doc, str) else doc
    doc.update(kid=kid, alg=alg, use="sig")
    return doc


def write_jwks(directory, kids):
    keys = [jwk(kid, load(directory, kid)) for kid in kids]
    path = os.path.join(directory, "jwks.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"keys": keys}, f)
    os.replace(path + ".tmp", path)


def claims(**changes):
    now = int(time.time())
    out = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "scope": "read write",
        "iat": now,
        "exp": now + 300,
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def unsigned(header, payload):
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())


def tokens(directory):
    rsa1, ec1, ed1 = load(directory, "rsa1"), load(directory, "ec1"), load(directory, "ed1")
    now = int(time.time())
    sign = lambda payload, key=rsa1, alg="RS256", kid="rsa1": jwt.encode(
        payload, key, algorithm=alg, headers={"kid": kid}
    )
    out = {
        "rs256": sign(claims()),
        "es256": sign(claims(sub="bob"), ec1, "ES256", "ec1"),
        "eddsa": sign(claims(sub="carol"), ed1, "EdDSA", "ed1"),
        "no_scope": sign(claims(scope="write")),
        "expired": sign(claims(iat=now - 600, exp=now - 300)),
        "not_yet_valid": sign(claims(nbf=now + 300)),
        "wrong_iss": sign(claims(iss="https://evil.test")),
        "wrong_aud": sign(claims(aud=["other-api"])),
        "unknown_kid": sign(claims(), kid="nobody"),
        "garbage": "not.a.jwt",
        "garbage_b64": "eyJhbGciOiJSUzI1NiJ9.%%%%.AAAA",
    }
    # alg none: no signature at all.
    out["alg_none"] = unsigned({"alg": "none", "kid": "rsa1"}, claims()) + "."
    # RS/HS confusion: HS256 keyed with the RSA public key's PEM bytes.
    pem = rsa1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed = unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims())
    out["hs_confusion"] = signed + "." + b64(hmac.new(pem, signed.encode(), hashlib.sha256).digest())
    # A payload changed after signing.
    head, _, signature = out["rs256"].split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    out["tampered"] = ".".join([head, forged, signature])
    rsa2 = load(directory, "rsa2")
    if rsa2 is not None:
        out["rotated"] = sign(claims(sub="dave"), rsa2, "RS256", "rsa2")
    return out


def main():
    command, directory = sys.argv[1], sys.argv[2]
    if command == "keys":
        save(directory, "rsa1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        save(directory, "ec1", ec.generate_private_key(ec.SECP256R1()))
        save(directory, "ed1", ed25519.Ed25519PrivateKey.generate())
        write_jwks(directory, ["rsa1", "ec1", "ed1"])
        print(json.dumps({"ok": True}))
    elif command == "rotate":
        save(directory, "rsa2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        write_jwks(directory, ["rsa2", "ec1", "ed1"])
        print(json.dumps({"ok": True}))
    elif command == "tokens":
        print(json.dumps(tokens(directory)))
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()
