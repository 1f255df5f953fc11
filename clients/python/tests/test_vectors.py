"""The shared vectors: RFC 6962 proofs (transparency-dev/merkle), the C2SP
signed-note example, and RFC 8785 canonical JSON. The vectors live in the
repository's testdata/ (see its README), or at $VERINFER_VECTORS."""

import base64
import json
import os
from pathlib import Path

import pytest

from verinfer import CanonicalError, Note, NoteError, ProofError, VerifierKey, canonical, verify_consistency, verify_inclusion
from verinfer.merkle import leaf_hash, sha256
from verinfer.note import ALG_COSIGNATURE_V1, ALG_ED25519, key_id

VECTORS = Path(os.environ.get("VERINFER_VECTORS") or Path(__file__).resolve().parents[3] / "testdata")


def cases(kind):
    found = sorted((VECTORS / "rfc6962" / kind).rglob("*.json"))
    assert len(found) > 20, f"found only {len(found)} {kind} vectors under {VECTORS}"
    return [pytest.param(json.loads(p.read_text()), id=str(p.relative_to(VECTORS))) for p in found]


def b(s):
    return base64.b64decode(s) if s else b""


@pytest.mark.parametrize("c", cases("inclusion"))
def test_inclusion(c):
    proof = [b(h) for h in c["proof"] or []]
    try:
        verify_inclusion(c["leafIdx"], c["treeSize"], b(c["leafHash"]), proof, b(c["root"]))
        failed = False
    except ProofError:
        failed = True
    assert failed == c["wantErr"], c["desc"]


@pytest.mark.parametrize("c", cases("consistency"))
def test_consistency(c):
    proof = [b(h) for h in c["proof"] or []]
    try:
        verify_consistency(c["size1"], c["size2"], proof, b(c["root1"]), b(c["root2"]))
        failed = False
    except ProofError:
        failed = True
    assert failed == c["wantErr"], c["desc"]


def test_known_hashes():
    assert sha256(b"").hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_signed_note_example():
    vk = VerifierKey.parse(VKEY, ALG_ED25519)
    assert vk.id == 0x530D903A
    Note.parse(NOTE).verify(vk)
    with pytest.raises(NoteError, match="does not verify"):
        Note.parse(NOTE.replace("example message", "example massage")).verify(vk)
    with pytest.raises(NoteError, match="key id"):
        VerifierKey.parse(VKEY.replace("530d903a", "530d903b"), ALG_ED25519)
    with pytest.raises(NoteError, match="cosignature"):
        VerifierKey.parse(VKEY, ALG_COSIGNATURE_V1)
    # Base64 may hold '+': only the first two separate the fields.
    key = bytes([0xFB] * 32)
    text = f"k+{key_id('k', ALG_ED25519, key):08x}+{base64.b64encode(bytes([ALG_ED25519]) + key).decode()}"
    assert "+" in text.split("+", 2)[2]
    assert VerifierKey.parse(text, ALG_ED25519).key == key


def test_canonical_json():
    value = {"b": 1, "a": [True, None, "x"], "\u00e9": "\u20ac\n", "\U0001f600": 0, "\u0080": -5}
    assert canonical(value) == '{"a":[true,null,"x"],"b":1,"\u0080":-5,"\u00e9":"\u20ac\\n","\U0001f600":0}'
    # Names sort by UTF-16 code units: U+1F600 (D83D DE00) before U+FB01.
    assert canonical({"\ufb01": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufb01":1}'
    assert canonical({"s": "\u0007\"\\/"}) == '{"s":"\\u0007\\"\\\\/"}'
    assert canonical({"a": 1, "signature": "x"}, skip="signature") == '{"a":1}'
    for bad in ({"f": 1.5}, {"n": 2**53}, {"s": "\ud800"}):
        with pytest.raises(CanonicalError):
            canonical(bad)
