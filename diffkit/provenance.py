"""What every generated file says about itself, and reading it back.

A record is a small JSON object: the generator ("diffkit VERSION"), the IPTC digital source type that
marks media made by a trained model, the command, the model's sha256, the sampler, its steps and seed,
and for an edit the sha256 of the input it changed. It travels inside the file where the format has a
place for text: PNG in iTXt chunks (the record, plus an XMP packet carrying the IPTC field where photo
tools look for it), WAV in a LIST/INFO chunk (ISFT the software, ICMT the record). Text and CSV results
get a sidecar `<file>.provenance.json` and the record in their `--json` lines.

The chunks are spliced into the encoded bytes rather than passed to an encoder, so one function stamps
whatever PNG or WAV a command produced, and stamping never changes a pixel or a sample.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from diffkit import __version__
from diffkit.errors import DiffkitError

SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
KEYWORD = "diffkit:provenance"  # the PNG iTXt keyword of the JSON record
SIDECAR = ".provenance.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:xmp="http://ns.adobe.com/xap/1.0/" Iptc4xmpExt:DigitalSourceType="{source}" xmp:CreatorTool="{tool}"/>
</rdf:RDF></x:xmpmeta><?xpacket end="r"?>"""


def record(command: str, model_sha256: str, sampler: str, steps: int, seed: int, input_sha256: str | None = None,
           **details) -> dict:
    """The provenance of one result; `details` adds what else the command chose (class, task, strength)."""
    out = {"generator": f"diffkit {__version__}", "digital_source_type": SOURCE_TYPE, "command": command,
           "model_sha256": model_sha256, "sampler": sampler, "steps": steps, "seed": seed}
    if input_sha256 is not None:
        out["input_sha256"] = input_sha256
    return {**out, **{k: v for k, v in details.items() if v is not None}}


def embed(data: bytes, provenance: dict) -> bytes:
    """PNG or WAV bytes with the record added; other data unchanged (they take a sidecar)."""
    text = json.dumps(provenance, separators=(",", ":"))
    if data.startswith(PNG_SIGNATURE):
        xmp = XMP.format(source=SOURCE_TYPE, tool=provenance["generator"])
        chunks = _itxt("XML:com.adobe.xmp", xmp) + _itxt(KEYWORD, text)
        end = len(data) - 12  # the IEND chunk, always last: length 0, type, CRC
        if data[end + 4:end + 8] != b"IEND":
            return data
        return data[:end] + chunks + data[end:]
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        info = b"INFO" + _info("ISFT", provenance["generator"]) + _info("ICMT", text)
        body = data[12:] + b"LIST" + struct.pack("<I", len(info)) + info
        return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    return data


def extract(data: bytes) -> dict | None:
    """The record a PNG or WAV carries, or None."""
    text = None
    if data.startswith(PNG_SIGNATURE):
        text = dict(_png_texts(data)).get(KEYWORD)
    elif data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        text = _wav_info(data).get("ICMT")
    if text is None:
        return None
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and "generator" in found else None


def _mime(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    return "audio/wav" if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else None


def _algorithm(key: bytes):
    """The C2PA signing algorithm of a PEM private key."""
    import c2pa
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        loaded = load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise DiffkitError(f"--c2pa-key: not an unencrypted PEM private key ({e})") from None
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    if isinstance(loaded, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    curves = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384,
              "secp521r1": c2pa.C2paSigningAlg.ES512}
    if isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name in curves:
        return curves[loaded.curve.name]
    raise DiffkitError("--c2pa-key: C2PA signs with EC P-256/384/521, Ed25519 or RSA keys")


def sign_c2pa(data: bytes, provenance: dict, cert: bytes, key: bytes) -> bytes:
    """PNG or WAV bytes with C2PA content credentials: a manifest saying a trained model created the
    file (c2pa.created with the IPTC source type) and holding the record, signed with the user's
    certificate and key, no timestamp authority (offline)."""
    try:
        import c2pa
    except ImportError:
        raise DiffkitError("--c2pa-cert needs c2pa-python: pip install 'diffkit[c2pa]'") from None
    import io

    mime = _mime(data)
    if mime is None:
        return data
    manifest = {"claim_generator_info": [{"name": "diffkit", "version": __version__}],
                "title": provenance["command"],
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": SOURCE_TYPE,
                     "softwareAgent": {"name": "diffkit", "version": __version__}}]}},
                    {"label": "org.diffkit.provenance", "data": provenance}]}
    signed = io.BytesIO()
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(_algorithm(key), cert, key, None))
        with c2pa.Builder(manifest) as builder:
            builder.sign(signer, mime, io.BytesIO(data), signed)
    except c2pa.C2paError as e:
        raise DiffkitError(f"--c2pa-cert: signing failed ({e})") from None
    return signed.getvalue()


def c2pa_manifest(data: bytes) -> dict | None:
    """The active C2PA manifest of a PNG or WAV, with its validation state, if it has one and
    c2pa-python is installed."""
    mime = _mime(data)
    try:
        import c2pa
    except ImportError:
        return None
    import io

    if mime is None:
        return None

    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except (c2pa.C2paError, ValueError, TypeError):
        return None
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    return {"claim_generator": manifest.get("claim_generator_info"), "issuer": manifest.get("signature_info", {}).get("issuer"),
            "validation_state": store.get("validation_state")}


def sidecar(path: str | Path) -> Path:
    return Path(f"{path}{SIDECAR}")


def read(path: str | Path) -> dict | None:
    """The record of a file diffkit wrote: inside it, or in its sidecar; None when it carries none."""
    path = Path(path)
    found = extract(path.read_bytes())
    if found is None and sidecar(path).is_file():
        try:
            found = json.loads(sidecar(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    return found if isinstance(found, dict) else None


def _itxt(keyword: str, text: str) -> bytes:
    """An uncompressed iTXt chunk: keyword, no compression, no language, no translated keyword."""
    body = keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))


def _png_texts(data: bytes):
    """(keyword, text) of every uncompressed iTXt chunk."""
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            if rest[:1] == b"\0":  # uncompressed
                _language, _, rest = rest[2:].partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                yield keyword.decode("latin-1"), text.decode("utf-8", "replace")
        at += 12 + length


def _info(tag: str, text: str) -> bytes:
    """A RIFF INFO sub-chunk: NUL-terminated text, padded to an even length."""
    value = text.encode("utf-8") + b"\0"
    return tag.encode("ascii") + struct.pack("<I", len(value)) + value + b"\0" * (len(value) % 2)


def _wav_info(data: bytes) -> dict:
    """The INFO fields of a WAV's LIST chunks."""
    fields, at = {}, 12
    while at + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[at:at + 8])
        if kind == b"LIST" and data[at + 8:at + 12] == b"INFO":
            sub, end = at + 12, at + 8 + length
            while sub + 8 <= end:
                tag, size = struct.unpack("<4sI", data[sub:sub + 8])
                fields[tag.decode("latin-1")] = data[sub + 8:sub + 8 + size].rstrip(b"\0").decode("utf-8", "replace")
                sub += 8 + size + size % 2
        at += 8 + length + length % 2
    return fields
