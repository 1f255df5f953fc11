"""C2SP signed notes, verifier keys, checkpoints and cosignatures.

- signed-note: a note is UTF-8 text ending in a newline, a blank line, then
  signature lines `— NAME BASE64(keyid || signature)`; a verifier key is
  `NAME+KEYID+BASE64(type || public key)` with KEYID the first four bytes of
  SHA-256(NAME || "\\n" || type || public key), as eight hex digits.
- tlog-checkpoint: the note text is the origin, the tree size in decimal and
  the base64 root hash, one a line, then optional extension lines.
- tlog-cosignature (type 0x04): the signature is an 8-byte big-endian Unix
  time then an Ed25519 signature of
  "cosignature/v1\\ntime TIME\\n" + the note text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import List

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A malformed note, key or checkpoint, or a signature that does not verify."""


def b64decode(text: str) -> bytes:
    """Standard base64 with padding; only the canonical encoding is accepted."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError("not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError("not canonical base64")
    return raw


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is an Ed25519 signature of `message` by `public`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def check_key_name(name: str) -> None:
    """A key name is non-empty and holds no whitespace and no '+'."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}")


def key_id(name: str, alg: int, key: bytes) -> int:
    """The C2SP key id of a key."""
    d = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + key).digest()
    return int.from_bytes(d[:4], "big")


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key: name, signature type, Ed25519 public key, key id."""

    name: str
    alg: int
    key: bytes
    id: int
    text: str

    @classmethod
    def parse(cls, text: str, alg: int) -> "VerifierKey":
        """Parses `name+keyid+base64` and checks its key id and that its type is `alg`."""
        t = text.strip()
        # The name holds no '+'; the base64 may.
        parts = t.split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is name+keyid+base64")
        name, id_text, material_text = parts
        check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", id_text):
            raise NoteError("key id must be 8 lowercase hex digits")
        material = b64decode(material_text)
        if len(material) != 33:
            raise NoteError("key material must be a type byte and a 32-byte Ed25519 key")
        if material[0] != alg:
            raise NoteError(
                "not an Ed25519 note key (type 0x01)" if alg == ALG_ED25519 else "not a tlog-cosignature key (type 0x04)"
            )
        key = material[1:]
        kid = key_id(name, alg, key)
        if kid != int(id_text, 16):
            raise NoteError("key id does not match name and key")
        return cls(name=name, alg=alg, key=key, id=kid, text=t)


@dataclass
class NoteSignature:
    """One signature line: key name, key id, signature bytes."""

    name: str
    key_id: int
    sig: bytes


@dataclass
class Note:
    """A parsed signed note."""

    text: str
    signatures: List[NoteSignature] = field(default_factory=list)

    @classmethod
    def parse(cls, s: str) -> "Note":
        """Splits a signed note into its text and signature lines."""
        if not s.endswith("\n"):
            raise NoteError("note must end with a newline")
        if any(ord(c) < 0x20 and c != "\n" for c in s):
            raise NoteError("control character in note")
        split = s.rfind("\n\n")
        if split < 0:
            raise NoteError("no blank line before the signatures")
        signatures = []
        for line in s[split + 2 : -1].split("\n"):
            if not line.startswith(DASH + " "):
                raise NoteError("signature line must start with an em dash")
            name, sep, sig_text = line[2:].partition(" ")
            if not sep:
                raise NoteError("signature line needs a name and a signature")
            check_key_name(name)
            raw = b64decode(sig_text)
            if len(raw) < 5:
                raise NoteError("signature too short")
            signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
        if len(signatures) > MAX_SIGNATURES:
            raise NoteError("too many signatures")
        return cls(s[: split + 1], signatures)

    def signatures_by(self, vk: VerifierKey) -> List[bytes]:
        """The signatures under `vk`'s name and key id."""
        return [s.sig for s in self.signatures if s.name == vk.name and s.key_id == vk.id]

    def verify(self, vk: VerifierKey) -> None:
        """Checks that the note carries an Ed25519 signature by `vk` and that
        every signature under its name and id verifies."""
        sigs = self.signatures_by(vk)
        if not sigs:
            raise NoteError(f"no signature by {vk.name}")
        for sig in sigs:
            if not ed25519_verify(vk.key, self.text.encode("utf-8"), sig):
                raise NoteError(f"signature by {vk.name} does not verify")

    def verify_cosignature(self, vk: VerifierKey) -> int:
        """Checks `vk`'s tlog-cosignature on the note; returns its time."""
        sigs = self.signatures_by(vk)
        if not sigs:
            raise NoteError(f"no cosignature by {vk.name}")
        times = []
        for raw in sigs:
            if len(raw) != 72:
                raise NoteError(f"cosignature by {vk.name} is malformed")
            time = int.from_bytes(raw[:8], "big")
            if time > 2**63 - 1:
                raise NoteError(f"cosignature by {vk.name} has a bad timestamp")
            msg = f"cosignature/v1\ntime {time}\n{self.text}".encode("utf-8")
            if not ed25519_verify(vk.key, msg, raw[8:]):
                raise NoteError(f"cosignature by {vk.name} does not verify")
            times.append(time)
        return times[-1]


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: List[str]

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        """Parses a checkpoint note's text."""
        if not text.endswith("\n"):
            raise NoteError("text must end with a newline")
        lines = text[:-1].split("\n")
        origin = lines[0]
        if not origin:
            raise NoteError("empty origin line")
        if len(lines) < 3:
            raise NoteError("missing tree size or root hash")
        if not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
            raise NoteError("tree size must be decimal without leading zeros")
        size = int(lines[1])
        if size >= 2**64:
            raise NoteError("tree size out of range")
        root = b64decode(lines[2])
        if len(root) != 32:
            raise NoteError("root hash must be base64 of 32 bytes")
        extensions = lines[3:]
        if any(e == "" for e in extensions):
            raise NoteError("empty extension line")
        return cls(origin, size, root, extensions)
