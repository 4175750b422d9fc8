#!/usr/bin/env python3
"""The authentication tokens of nercc messages, computed with Python's own hmac module: the
reference that the Swift implementation is tested against, and a helper for other languages.

  python3 ops/schemas/tokens.py
      Checks that schemas/token-vectors.json holds what this reference computes.
  python3 ops/schemas/tokens.py --write
      Writes schemas/token-vectors.json (the vectors are fixed: run it only when adding one).
  python3 ops/schemas/tokens.py --key FILE PURPOSE TEXT
      Prints the token of TEXT (UTF-8) for PURPOSE under the key in FILE, e.g.
      `--key nercc.key nercc.task 631cdfdcfd70cfeea98fd370aea5ec1a/5`.

The rule (schemas/README.md, "Authenticated tasks and results"): the key is the UTF-8 bytes of the
key text without leading and trailing white space (at least 32 bytes); a token is the lowercase hex
of HMAC-SHA256(key, purpose || 0x00 || data), the purpose being the AMQP type of the message it
authenticates: nercc.task (data: the task's message id '<batch id>/<coded index>'), nercc.manifest
(the manifest's JSON body, which is also the x-nercc-manifest copy), nercc.abandon and nercc.hedge
(their JSON body).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[2] / "schemas" / "token-vectors.json"
MINIMUM_KEY_BYTES = 32


def key_bytes(text: str) -> bytes:
    key = text.strip().encode("utf-8")
    if len(key) < MINIMUM_KEY_BYTES:
        raise ValueError(f"the key has {len(key)} bytes; it needs at least {MINIMUM_KEY_BYTES}")
    return key


def token(key_text: str, purpose: str, data: bytes) -> str:
    return hmac.new(key_bytes(key_text), purpose.encode("utf-8") + b"\x00" + data, hashlib.sha256).hexdigest()


MANIFEST = (
    '{"version":1,"batch_id":"631cdfdcfd70cfeea98fd370aea5ec1a","model":"mnist-mlp",'
    '"scheme":{"name":"uncoded","workers":1,"batch_size":1},"wait_for":1}'
)

# (key text, purpose, data as text); the key texts include white space that is stripped.
CASES = [
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "nercc.task",
     "631cdfdcfd70cfeea98fd370aea5ec1a/5"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "nercc.task",
     "631cdfdcfd70cfeea98fd370aea5ec1a/6"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", "nercc.manifest", MANIFEST),
    ("  a key of exactly thirty-two bytes!  \n", "nercc.abandon", '{"version":1}'),
    ("a key of exactly thirty-two bytes!", "nercc.hedge", '{"version":1,"batch_id":"631cdfdcfd70cfeea98fd370aea5ec1a"}'),
    ("a key of exactly thirty-two bytes!", "nercc.task", ""),
    ("ключ, который длиннее тридцати двух байтов", "nercc.task", "631cdfdcfd70cfeea98fd370aea5ec1a/0"),
]


def vectors() -> dict:
    return {
        "description": (
            "Authentication tokens computed by ops/schemas/tokens.py with Python's hmac module: "
            "token = hex(HMAC-SHA256(key, purpose || 0x00 || data)), key = UTF-8 of key_text without "
            "leading and trailing white space. Implementations of nercc's token rule must reproduce them."
        ),
        "vectors": [
            {"key_text": k, "purpose": p, "data": d, "token": token(k, p, d.encode("utf-8"))} for k, p, d in CASES
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write schemas/token-vectors.json")
    parser.add_argument("--key", metavar="FILE", help="print one token under the key in FILE")
    parser.add_argument("rest", nargs="*", help="PURPOSE TEXT (with --key)")
    args = parser.parse_args()
    if args.key:
        if len(args.rest) != 2:
            parser.error("--key FILE needs PURPOSE and TEXT")
        print(token(Path(args.key).read_text(encoding="utf-8"), args.rest[0], args.rest[1].encode("utf-8")))
        return 0
    expected = vectors()
    if args.write:
        VECTORS.write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {VECTORS} ({len(expected['vectors'])} vectors)")
        return 0
    committed = json.loads(VECTORS.read_text(encoding="utf-8"))
    if committed != expected:
        print(f"{VECTORS} differs from what this reference computes", file=sys.stderr)
        return 1
    print(f"tokens: {len(expected['vectors'])} vectors agree with Python's hmac")
    return 0


if __name__ == "__main__":
    sys.exit(main())
