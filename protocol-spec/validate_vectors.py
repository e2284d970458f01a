#!/usr/bin/env python3
"""Validates the XML body of every valid test vector against upgram.xsd with xmllint, and
re-derives every batch trailer (SPEC.md §3.4, §10.3.1) with hashlib alone.

An independent check that the schema, the vectors and the reference codec agree. Vectors
that exercise forward compatibility (reencode = false) carry extension elements the XSD 1.0
schema cannot describe without a namespace and are skipped (SPEC.md §4.1.3 is normative).
Invalid vectors are not checked against the schema; those whose error is a violation of XML
well-formedness itself (xml-syntax, entity, duplicate-attribute) must be rejected by xmllint
as not well-formed too.

Batch-signed vectors: the leaf is hashed from the body, the root computed along the audit
path (the trailer does not carry it), and the Ed25519 signature checked over that root; the
vectors that must fail on their batch trailer are checked to fail for the stated reason. The
signature check needs the `cryptography` package: without it only the trailer's layout is
checked (said so in the output).
Usage: python3 protocol-spec/validate_vectors.py   (needs xmllint, package libxml2-utils)
"""
import hashlib, pathlib, struct, subprocess, sys, tempfile, tomllib

here = pathlib.Path(__file__).resolve().parent
TEST_PUBLIC_KEY = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
BATCH, NONCE, SERVER_COOKIE, MAX_DEPTH = 0x0008, 0x0004, 0x0002, 6
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    root_key = Ed25519PublicKey.from_public_bytes(TEST_PUBLIC_KEY)
except ImportError:
    root_key = None


def batch_outcome(data):
    """What a verifier concludes from a batch-signed datagram's trailer: 'ok' or an error name."""
    flags, body_len = struct.unpack(">H", data[6:8])[0], struct.unpack(">H", data[16:18])[0]
    body = data[20:20 + body_len]
    at = 20 + body_len + (16 if flags & SERVER_COOKIE else 0)
    nonce = data[at:at + 16] if flags & NONCE else None
    at += (16 if flags & NONCE else 0) + 8
    signature, at = data[at:at + 64], at + 64
    depth, index = data[at], data[at + 1]
    if depth > MAX_DEPTH:
        return "path-too-long"
    if depth == 0:
        return "empty-path"
    if index >= 1 << depth:
        return "wrong-position"
    path = data[at + 2:]
    if len(path) != 32 * depth:
        return "length-mismatch" if len(path) > 32 * depth else "truncated"
    node = hashlib.sha256(b"upgram-v1-leaf\0" + bytes([data[5], 1 if nonce else 0]) + (nonce or b"") + body).digest()
    for level in range(depth):
        sibling = path[32 * level:32 * level + 32]
        pair = node + sibling if (index >> level) & 1 == 0 else sibling + node
        node = hashlib.sha256(b"upgram-v1-node\0" + pair).digest()
    if root_key is None:
        return None
    try:
        root_key.verify(signature, b"upgram-v1-root\0" + node)
    except Exception:
        return "bad-path"
    return "ok"


WELL_FORMEDNESS = {"xml-syntax", "entity", "duplicate-attribute"}
checked, ill_formed, batches, failures = 0, 0, 0, []
with tempfile.TemporaryDirectory() as scratch:
    for path in sorted((here / "vectors").glob("*.toml")):
        v = tomllib.loads(path.read_text())
        if v["kind"] == "datagram":
            data = bytes.fromhex("".join(v["hex"].split()))
            if len(data) >= 20 and data[5] in (2, 3) and struct.unpack(">H", data[6:8])[0] & BATCH:
                batches += 1
                outcome, expected = batch_outcome(data), v.get("error", "ok")
                if outcome is None and expected in ("ok", "bad-path"):
                    continue
                if outcome != expected:
                    failures.append(f"{path.name}: batch trailer gives {outcome}, the vector says {expected}")
        if "error" in v and v["error"] not in WELL_FORMEDNESS or v.get("reencode", True) is False:
            continue
        if v["kind"] == "document":
            body = v["text"].rstrip("\n").encode()
        elif v["kind"] == "datagram":
            data = bytes.fromhex("".join(v["hex"].split()))
            body = data[20:20 + struct.unpack(">H", data[16:18])[0]]
        else:
            continue
        if not body:
            continue
        file = pathlib.Path(scratch) / (path.stem + ".xml")
        file.write_bytes(body)
        if "error" in v:
            run = subprocess.run(["xmllint", "--noout", str(file)], capture_output=True, text=True)
            ill_formed += 1
            if run.returncode == 0:
                failures.append(f"{path.name}: xmllint finds the body well-formed, the vector says {v['error']}")
            continue
        run = subprocess.run(["xmllint", "--noout", "--schema", str(here / "upgram.xsd"), str(file)],
                             capture_output=True, text=True)
        checked += 1
        if run.returncode != 0:
            failures.append(f"{path.name}: {run.stderr.strip()}")
print(f"{checked} vector bodies checked against upgram.xsd, {ill_formed} ill-formed ones against xmllint, "
      f"{batches} batch trailers re-derived"
      f"{'' if root_key else ' (batch signatures NOT checked, only the layout of their trailers: the cryptography package is missing)'}"
      f", {len(failures)} failed")
for failure in failures:
    print(failure)
sys.exit(1 if failures or checked == 0 else 0)
