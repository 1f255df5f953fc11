"""Checking a receipt with no trust in any node (docs/design.md).

A gateway serves a receipt bundle (`GET /v1/receipts/{id}`): the receipt's
log leaf, the receipt itself when its owner asks, a cosigned checkpoint and
the inclusion proof of the leaf in it. :func:`verify_receipt` decides from
the bundle and the keys the caller pins (:class:`Trust`) whether it holds:

1. the id is the RFC 6962 leaf hash of the leaf's canonical bytes;
2. a disclosed receipt opens the leaf (salted commitments
   SHA-256(salt || canonical record), the certificate hash, fees, model,
   node, requester), the request's, result's and verdicts' signatures
   verify, the result answers this request with this model, and the
   certificate holds accepting verdicts on this pair by distinct trusted
   verifiers, as many as the request's policy asks;
3. the checkpoint is signed by the log's key, covers the leaf (RFC 6962
   inclusion proof), and is cosigned by a quorum of trusted witnesses.

Witnesses and verifiers are the same keys, so one list trusts both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .canonical import CanonicalError, canonical_bytes
from .merkle import ProofError, leaf_hash, sha256, verify_inclusion
from .note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, NoteError, VerifierKey, b64decode, ed25519_verify

SIGNATURE_DOMAIN = b"verinfer-signature-v1\n"
TYPES = {
    "request": "verinfer.request.v1",
    "result": "verinfer.result.v1",
    "verdict": "verinfer.verdict.v2",
    "certificate": "verinfer.certificate.v1",
    "receipt": "verinfer.receipt.v1",
    "leaf": "verinfer.leaf.v1",
}
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_RECEIPT_MEMBERS = {"type", "request", "result", "certificate", "fees", "salt"}


class ReceiptError(Exception):
    """A receipt that does not verify; the message says which check fails.

    `check` names the check: keys, id, commitments, request, result, binding,
    certificate, verdicts, quorum, checkpoint, log, inclusion, cosignatures.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class PendingError(ReceiptError):
    """Everything else holds, but no cosigned checkpoint covers the receipt yet."""


def unhex(value: Any, length: int, what: str, check: str) -> bytes:
    """Bytes of lowercase hex `value` of `length` bytes."""
    if not isinstance(value, str) or len(value) != 2 * length or not _HEX.fullmatch(value):
        raise ReceiptError(check, f"{what} is not {length} bytes of lowercase hex")
    return bytes.fromhex(value)


def record_hash(record: Any) -> str:
    """Hex SHA-256 of a record's canonical bytes."""
    return sha256(canonical_bytes(record)).hex()


def record_signature_ok(record: Mapping[str, Any], kind: str, signer: str) -> bool:
    """Whether the record's signature by the key in field `signer` verifies:
    it covers the domain tag, the record type and a newline, then the
    canonical record without its `signature` member."""
    if not isinstance(record, Mapping) or record.get("type") != TYPES[kind]:
        return False
    try:
        key = unhex(record.get(signer), 32, "the signer", kind)
        sig = unhex(record.get("signature"), 64, "the signature", kind)
    except ReceiptError:
        return False
    msg = SIGNATURE_DOMAIN + TYPES[kind].encode() + b"\n" + canonical_bytes(record, skip="signature")
    return ed25519_verify(key, msg, sig)


def required_verdicts(verification: Any) -> int:
    """Accepting verdicts a verification mode requires: `quorum(k)` needs
    max(k, 1); `none`, `sampled` and `optimistic` certify nothing at
    settlement."""
    if isinstance(verification, Mapping) and verification.get("mode") == "quorum":
        k = verification.get("k")
        return max(k, 1) if isinstance(k, int) and not isinstance(k, bool) else 1
    return 0


@dataclass
class Trust:
    """The keys a check relies on, as C2SP verifier-key strings.

    `log_key` is the log's key (type 0x01), `witnesses` the witnesses' keys
    (type 0x04; they are also the verifiers whose verdicts count) and
    `witness_quorum` the cosignatures a checkpoint needs: by default a strict
    majority of the distinct pinned witnesses. What is left out (None, no
    witnesses) is taken from the receipt, and the report says so: such a
    check proves the receipt consistent, not that its keys are the
    network's. Nothing in a receipt lowers a pinned quorum.
    """

    log_key: Optional[str] = None
    witnesses: Sequence[str] = field(default_factory=list)
    witness_quorum: Optional[int] = None

    def resolve(self, bundle: Mapping[str, Any]) -> "ResolvedTrust":
        """The parsed keys to check `bundle` with."""
        pinned_witnesses = bool(self.witnesses)
        try:
            log_key = VerifierKey.parse(self.log_key or str(bundle.get("log_key") or ""), ALG_ED25519)
        except NoteError as e:
            raise ReceiptError("keys", f"log key: {e}") from None
        witnesses = []
        for w in self.witnesses if pinned_witnesses else bundle.get("witnesses") or []:
            try:
                witnesses.append(VerifierKey.parse(str(w), ALG_COSIGNATURE_V1))
            except NoteError as e:
                raise ReceiptError("keys", f"witness key {w}: {e}") from None
        quorum = self.witness_quorum
        if quorum is None:
            quorum = len({w.key for w in witnesses}) // 2 + 1 if pinned_witnesses else bundle.get("witness_quorum")
        if not isinstance(quorum, int) or isinstance(quorum, bool) or quorum < 0:
            raise ReceiptError("keys", "the witness quorum is not a number")
        return ResolvedTrust(log_key, witnesses, quorum, self.log_key is not None, pinned_witnesses)


@dataclass
class ResolvedTrust:
    """Parsed keys and where they came from."""

    log_key: VerifierKey
    witnesses: List[VerifierKey]
    witness_quorum: int
    log_key_pinned: bool
    witnesses_pinned: bool


@dataclass
class Report:
    """What a receipt that passed every check establishes.

    `status` is `verified` (certified by the quorum the request's policy
    asks), `provisional` (the policy asks for no verdict) or `leaf-only`
    (the receipt's text was not disclosed, so only the leaf was checked).
    `final` is False only for a receipt checked with `allow_pending` that no
    cosigned checkpoint covers yet.
    """

    id: str
    index: int
    status: str
    final: bool
    model: str
    node: str
    requester: str
    fees: Dict[str, str]
    receipt: Optional[Dict[str, Any]]
    verifiers: List[str]
    verdicts_required: int
    checkpoint: Optional[Checkpoint]
    cosigners: List[str]
    trust: ResolvedTrust


def _check_disclosed(r: Any, leaf: Mapping[str, Any], trust: ResolvedTrust) -> Tuple[List[str], int]:
    if not isinstance(r, Mapping) or r.get("type") != TYPES["receipt"]:
        raise ReceiptError("commitments", "the receipt's type is not " + TYPES["receipt"])
    # The receipt itself is not hashed, only its parts: hold it to its members.
    if set(r) != _RECEIPT_MEMBERS:
        raise ReceiptError("commitments", "the receipt's members are not those of " + TYPES["receipt"])
    try:
        request, result, certificate = r["request"], r["result"], r["certificate"]
        salt = unhex(r.get("salt"), 32, "the salt", "commitments")
        req_bytes = canonical_bytes(request)
        res_bytes = canonical_bytes(result)
        opened = [
            ("request commitment", sha256(salt + req_bytes).hex(), leaf.get("request")),
            ("result commitment", sha256(salt + res_bytes).hex(), leaf.get("result")),
            ("certificate hash", record_hash(certificate), leaf.get("certificate")),
            ("fees", canonical_bytes(r.get("fees")), canonical_bytes(leaf.get("fees"))),
            ("model", result.get("model"), leaf.get("model")),
            ("inference node", result.get("node"), leaf.get("node")),
            ("requester", request.get("requester"), leaf.get("requester")),
        ]
    except (KeyError, TypeError, AttributeError, CanonicalError) as e:
        raise ReceiptError("commitments", f"the receipt is malformed: {e}") from None
    for what, mine, theirs in opened:
        if mine != theirs:
            raise ReceiptError("commitments", f"the receipt does not match its log leaf: the {what} differs")
    request_hash = sha256(req_bytes).hex()
    result_hash = sha256(res_bytes).hex()

    if not record_signature_ok(request, "request", "signer"):
        raise ReceiptError("request", "the request's signature does not verify")
    if not record_signature_ok(result, "result", "node"):
        raise ReceiptError("result", "the result's signature by its inference node does not verify")
    if result.get("request") != request_hash:
        raise ReceiptError("binding", f"the result answers request {result.get('request')}, not this request ({request_hash})")
    if result.get("model") != request.get("model"):
        raise ReceiptError("binding", f"the result was produced by model {result.get('model')}, but the request asks for {request.get('model')}")
    if not isinstance(certificate, Mapping) or certificate.get("type") != TYPES["certificate"]:
        raise ReceiptError("certificate", "the certificate's type is not " + TYPES["certificate"])
    if certificate.get("result") != result_hash:
        raise ReceiptError("certificate", f"the certificate is about result {certificate.get('result')}, not this result ({result_hash})")

    seen = set()
    verifiers = []
    verdicts = certificate.get("verdicts")
    if not isinstance(verdicts, list):
        raise ReceiptError("verdicts", "the certificate's verdicts are not a list")
    for v in verdicts:
        who = v.get("verifier") if isinstance(v, Mapping) else None
        if not record_signature_ok(v, "verdict", "verifier"):
            raise ReceiptError("verdicts", f"the verdict by verifier {who} has a signature that does not verify")
        if v.get("decision") != "accept":
            raise ReceiptError("verdicts", f"verifier {who} rejected the result: {v.get('reason') or 'no reason given'}")
        if v.get("result") != result_hash:
            raise ReceiptError("verdicts", f"the verdict by verifier {who} is about another result")
        if v.get("request") != request_hash:
            raise ReceiptError("verdicts", f"the verdict by verifier {who} checked the result against another request")
        if who in seen:
            raise ReceiptError("verdicts", f"verifier {who} has more than one verdict in the certificate")
        seen.add(who)
        w = next((w for w in trust.witnesses if w.key.hex() == who), None)
        if w is None:
            raise ReceiptError("verdicts", f"the verdict by {who} is not from a trusted verifier (not one of the witness keys)")
        verifiers.append(w.name)
    policy = request.get("policy")
    need = required_verdicts(policy.get("verification") if isinstance(policy, Mapping) else None)
    if len(verifiers) < need:
        raise ReceiptError("quorum", f"the certificate has {len(verifiers)} accepting verdict(s); the request's policy needs {need}")
    return verifiers, need


def _check_inclusion(bundle: Mapping[str, Any], trust: ResolvedTrust) -> Tuple[Checkpoint, List[str]]:
    text = bundle.get("checkpoint")
    if not text:
        raise PendingError("checkpoint", "no cosigned checkpoint covers this receipt yet")
    try:
        if not isinstance(text, str):
            raise NoteError("the checkpoint is not a note")
        note = Note.parse(text)
        cp = Checkpoint.parse(note.text)
        if cp.origin != trust.log_key.name:
            raise NoteError(f"the checkpoint is for origin {cp.origin!r}, expected {trust.log_key.name!r}")
        note.verify(trust.log_key)
    except NoteError as e:
        raise ReceiptError("log", f"the checkpoint is not a checkpoint signed by the trusted log key: {e}") from None
    index = bundle["index"]
    if index >= cp.size:
        raise ReceiptError("inclusion", f"the checkpoint (size {cp.size}) does not cover log index {index}")
    proof = []
    for position, h in enumerate(bundle.get("inclusion_proof") or []):
        try:
            b = b64decode(h) if isinstance(h, str) else b""
        except NoteError:
            b = b""
        if len(b) != 32:
            raise ReceiptError("inclusion", f"inclusion proof element {position} is not base64 of 32 bytes")
        proof.append(b)
    leaf = unhex(bundle.get("id"), 32, "the receipt id", "id")
    try:
        verify_inclusion(index, cp.size, leaf, proof, cp.root)
    except ProofError as e:
        raise ReceiptError("inclusion", f"the leaf is not at index {index} of the checkpoint's tree: {e}") from None

    # Count signers, not names: one key listed twice is one witness.
    signers = set()
    cosigners = []
    for w in trust.witnesses:
        if w.key in signers:
            continue
        try:
            note.verify_cosignature(w)
        except NoteError:
            continue
        signers.add(w.key)
        cosigners.append(w.name)
    if len(cosigners) < trust.witness_quorum:
        raise ReceiptError(
            "cosignatures",
            f"{len(cosigners)} trusted witness cosignature(s) on the checkpoint; {trust.witness_quorum} needed",
        )
    return cp, cosigners


# A bundle's members and what each must be; the first six are required.
_BUNDLE: Dict[str, Any] = {
    "id": str,
    "index": int,
    "leaf": Mapping,
    "log_key": str,
    "witnesses": list,
    "witness_quorum": int,
    "receipt": (Mapping, type(None)),
    "checkpoint": (str, type(None)),
    "inclusion_proof": list,
}


def check_bundle_shape(bundle: Any) -> None:
    """Checks that `bundle` has the members of a receipt bundle, each of its
    kind, and no other: a bundle is refused as a whole when malformed, even
    in a member pinned keys make unused."""
    if not isinstance(bundle, Mapping):
        raise ReceiptError("id", "not a receipt bundle (not a JSON object)")
    for name in bundle:
        if name not in _BUNDLE:
            raise ReceiptError("id", f"the bundle is malformed: unknown member {name!r}")
    for i, (name, kind) in enumerate(_BUNDLE.items()):
        if name not in bundle:
            if i < 6:
                raise ReceiptError("id", f"the bundle is malformed: no {name!r}")
            continue
        value = bundle[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ReceiptError("id", f"the bundle is malformed: {name!r} is not of its kind")
    if not 0 <= bundle["index"] < 2**64 or not 0 <= bundle["witness_quorum"] < 2**32:
        raise ReceiptError("id", "the bundle is malformed: a number is out of range")
    if not all(isinstance(x, str) for x in bundle["witnesses"] + bundle.get("inclusion_proof", [])):
        raise ReceiptError("id", "the bundle is malformed: keys and proof hashes are strings")


def verify_receipt(bundle: Mapping[str, Any], trust: Optional[Trust] = None, *, allow_pending: bool = False) -> Report:
    """Checks a receipt bundle against the keys pinned in `trust` (default:
    none pinned, the bundle's own keys are used) and returns a
    :class:`Report`, or raises :class:`ReceiptError` naming the check that
    fails. With `allow_pending`, a receipt that no cosigned checkpoint covers
    yet passes when everything else holds (`report.final` is then False);
    otherwise that raises :class:`PendingError`.
    """
    check_bundle_shape(bundle)
    resolved = (trust or Trust()).resolve(bundle)
    leaf = bundle.get("leaf")
    if not isinstance(leaf, Mapping) or leaf.get("type") != TYPES["leaf"]:
        raise ReceiptError("id", "the bundle's leaf is not a " + TYPES["leaf"])
    try:
        computed = leaf_hash(canonical_bytes(leaf)).hex()
    except CanonicalError as e:
        raise ReceiptError("id", f"the leaf cannot be encoded canonically: {e}") from None
    if computed != bundle.get("id"):
        raise ReceiptError("id", f"receipt id {bundle.get('id')} is not the leaf hash of its log leaf ({computed})")

    index = bundle["index"]
    receipt = bundle.get("receipt")
    verifiers: List[str] = []
    need = 0
    if receipt is not None:
        verifiers, need = _check_disclosed(receipt, leaf, resolved)
    try:
        cp, cosigners = _check_inclusion(bundle, resolved)
        final = True
    except PendingError:
        if not allow_pending:
            raise
        cp, cosigners, final = None, [], False
    status = "leaf-only" if receipt is None else "verified" if need > 0 else "provisional"
    return Report(
        id=computed,
        index=index,
        status=status,
        final=final,
        model=leaf.get("model", ""),
        node=leaf.get("node", ""),
        requester=leaf.get("requester", ""),
        fees=dict(leaf.get("fees") or {}),
        receipt=dict(receipt) if receipt is not None else None,
        verifiers=verifiers,
        verdicts_required=need,
        checkpoint=cp,
        cosigners=cosigners,
        trust=resolved,
    )
