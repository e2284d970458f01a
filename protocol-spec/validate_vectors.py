#!/usr/bin/env python3
"""Validates the XML body of every valid test vector against upgram.xsd with xmllint.

An independent check that the schema, the vectors and the reference codec agree. Vectors
that exercise forward compatibility (reencode = false) carry extension elements the XSD 1.0
schema cannot describe without a namespace and are skipped (SPEC.md §4.1.3 is normative).
Invalid vectors are not checked against the schema; those whose error is a violation of XML
well-formedness itself (xml-syntax, entity, duplicate-attribute) must be rejected by xmllint
as not well-formed too.
Usage: python3 protocol-spec/validate_vectors.py   (needs xmllint, package libxml2-utils)
"""
import pathlib, struct, subprocess, sys, tempfile, tomllib

here = pathlib.Path(__file__).resolve().parent
WELL_FORMEDNESS = {"xml-syntax", "entity", "duplicate-attribute"}
checked, ill_formed, failures = 0, 0, []
with tempfile.TemporaryDirectory() as scratch:
    for path in sorted((here / "vectors").glob("*.toml")):
        v = tomllib.loads(path.read_text())
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
      f"{len(failures)} failed")
for failure in failures:
    print(failure)
sys.exit(1 if failures or checked == 0 else 0)
