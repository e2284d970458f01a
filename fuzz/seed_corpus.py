#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from protocol-spec/vectors/ (run from the repository root).

Datagram vectors seed `datagram`, signed replies among them also `batch` (with a few
synthetic batches: a count byte, then the bodies); their XML bodies and the document vectors seed `document`
and `roundtrip`; record vectors seed `records` (as <u16 LE split> base delta); the versions
that appear in the vectors seed `version`; a few synthetic compact queries and answers (SPEC.md
§4.3, §4.4: the attribute in its four spellings, dependency entries) seed `document` and
`roundtrip`. Re-running it only adds files.
"""
import hashlib, pathlib, re, struct, tomllib

root = pathlib.Path(__file__).resolve().parent.parent
vectors = sorted((root / "protocol-spec" / "vectors").glob("*.toml"))
corpus = root / "fuzz" / "corpus"

def put(target, name, data):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{hashlib.sha256(data).hexdigest()[:12]}").write_bytes(data)

def body_of(datagram):
    if len(datagram) < 20:
        return b""
    length = struct.unpack(">H", datagram[16:18])[0]
    return datagram[20:20 + length]

record_file, versions = None, set()
for path in vectors:
    v = tomllib.loads(path.read_text())
    data = bytes.fromhex("".join(v["hex"].split())) if "hex" in v else v["text"].rstrip("\n").encode()
    name = path.stem
    if v["kind"] == "datagram":
        put("datagram", name, data)
        if len(data) > 5 and data[5] in (2, 3):
            put("batch", name, data)
        body = body_of(data)
        if body:
            put("document", name, body)
            put("roundtrip", name, body)
    elif v["kind"] == "document":
        put("document", name, data)
        put("roundtrip", name, data)
    elif v["kind"] == "record-file":
        record_file = data
    elif v["kind"] == "record-delta" and record_file is not None:
        put("records", name, struct.pack("<H", len(record_file)) + record_file + data)
        put("records", name + "-self", struct.pack("<H", len(record_file)) + record_file + record_file)
    versions.update(re.findall(rb'(?:version|latest|min|from|floor)="([^"]+)"', data))

ordered = sorted(versions)
for i, version in enumerate(ordered):
    put("version", f"v{i}", version + b"\n" + ordered[(i + 1) % len(ordered)])
for extra in [b"1.0.0-alpha.1\n1.0.0-alpha.beta", b"1.2\n1.2.0", b"0\n0.0.0.0.0.0.0.0", b"1.0-rc.1\n1.0"]:
    put("version", "extra", extra)
for count in [0, 1, 2, 7, 63, 64, 79]:
    bodies = b"".join(b"<response n=\"%d\"/>" % i for i in range(count + 1))
    put("batch", f"synthetic-{count + 1}", bytes([count]) + bodies)
# Query attributes of the rollout (SPEC.md section 4.3): channels and buckets at and past the edges.
for i, attributes in enumerate([b'channel="beta" bucket="0"', b'bucket="99"', b'bucket="100"', b'bucket="255"',
                                b'bucket="256"', b'bucket="007"', b'channel="' + b"c" * 128 + b'"',
                                b'channel="' + b"c" * 129 + b'"', b'channel="a b"', b'channel="stable" bucket=""',
                                b'compact="1" channel="beta" bucket="37"']):
    body = b"<query " + attributes + b'><module id="core" version="1.2"/></query>'
    put("document", f"rollout-{i}", body)
    put("roundtrip", f"rollout-{i}", body)

FOR = b'for="' + b"ab" * 32 + b'" issued="1764000000" expires="1764000300"'
compact_bodies = [
    b'<query compact="1"><module id="a" version="1.0"/><module id="b"/></query>',
    b'<query compact="true"><module id="a" version="1.0"><file id="x/y" version="1"/></module></query>',
    b'<query compact="0"><module id="a" version="1.0"/></query>',
    b'<query compact="false"><module id="a" version="1.0"/></query>',
    b'<response ' + FOR + b' compact="1"/>',
    b'<response ' + FOR + b' base="https://u.example/" compact="1"><module id="b" status="update" latest="2"><file id="f" version="2" mode="replace" url="s/f" size="1" sha256="' + b"cd" * 32 + b'"/></module><module id="lib" status="update" latest="1" dependency="1"><package url="s/p" size="2" sha256="' + b"ef" * 32 + b'"/></module></response>',
    b'<response ' + FOR + b' compact="true"><module id="a" status="current" latest="1.0"/></response>',
]
for i, body in enumerate(compact_bodies):
    put("document", f"compact-{i}", body)
    put("roundtrip", f"compact-{i}", body)
