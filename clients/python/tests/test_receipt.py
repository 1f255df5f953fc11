"""Receipt checks on a receipt bundle a devnet served
(clients/testdata/receipt-bundle.json: a chat answer verified by a quorum
of one, in a checkpoint cosigned by three witnesses)."""

import base64
import copy
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verinfer import PendingError, ReceiptError, Trust, verify_receipt
from verinfer.note import ALG_COSIGNATURE_V1, ALG_ED25519, key_id

FIXTURE = Path(__file__).resolve().parents[2] / "testdata" / "receipt-bundle.json"


@pytest.fixture
def bundle():
    return json.loads(FIXTURE.read_text())


def pinned(b, **kw):
    return Trust(log_key=b["log_key"], witnesses=b["witnesses"], **kw)


def fresh_vkey(name, alg):
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{name}+{key_id(name, alg, key):08x}+{base64.b64encode(bytes([alg]) + key).decode()}"


def fails(b, trust, check):
    with pytest.raises(ReceiptError) as e:
        verify_receipt(b, trust)
    assert e.value.check == check, str(e.value)


def test_a_fresh_receipt_verifies_with_pinned_keys(bundle):
    r = verify_receipt(bundle, pinned(bundle))
    assert (r.status, r.final, r.id) == ("verified", True, bundle["id"])
    assert len(r.cosigners) >= r.trust.witness_quorum == len(bundle["witnesses"]) // 2 + 1
    assert r.trust.log_key_pinned and r.trust.witnesses_pinned
    assert not verify_receipt(bundle).trust.log_key_pinned


def test_without_its_text_only_the_leaf_is_checked(bundle):
    del bundle["receipt"]
    assert verify_receipt(bundle, pinned(bundle)).status == "leaf-only"


@pytest.mark.parametrize(
    "change, check",
    [
        (lambda b: b["receipt"]["result"].update(output_text=b["receipt"]["result"]["output_text"] + "!"), "commitments"),
        (lambda b: b["receipt"]["request"]["decoding"].update(max_tokens=1), "commitments"),
        (lambda b: b["leaf"]["fees"].update(total="1"), "id"),
        (lambda b: b.update(index=b["index"] + 1), "inclusion"),
        (lambda b: b["inclusion_proof"].append(base64.b64encode(bytes(32)).decode()), "inclusion"),
        (lambda b: b.update(checkpoint=b["checkpoint"].replace("\n", "\nx", 1)), "log"),
    ],
)
def test_a_changed_field_fails(bundle, change, check):
    change(bundle)
    fails(bundle, pinned(bundle), check)


def test_a_pending_receipt_passes_only_when_allowed(bundle):
    bundle["checkpoint"] = None
    with pytest.raises(PendingError):
        verify_receipt(bundle, pinned(bundle))
    r = verify_receipt(bundle, pinned(bundle), allow_pending=True)
    assert (r.status, r.final, r.checkpoint) == ("verified", False, None)


def test_another_log_key_fails(bundle):
    name = bundle["log_key"].split("+")[0]
    fails(bundle, Trust(log_key=fresh_vkey(name, ALG_ED25519), witnesses=bundle["witnesses"]), "log")


def test_verdicts_of_unpinned_verifiers_do_not_count(bundle):
    others = [fresh_vkey(f"w{i}", ALG_COSIGNATURE_V1) for i in range(3)]
    fails(bundle, Trust(log_key=bundle["log_key"], witnesses=others), "verdicts")


def test_nothing_in_the_receipt_lowers_the_quorum(bundle):
    # Three pinned witnesses who never cosigned: a majority of six is four.
    bundle["witness_quorum"] = 0
    bundle["witnesses"] = []
    extra = [fresh_vkey(f"w{i}", ALG_COSIGNATURE_V1) for i in range(3)]
    b = json.loads(FIXTURE.read_text())
    trust = Trust(log_key=b["log_key"], witnesses=b["witnesses"] + extra)
    fails(bundle, trust, "cosignatures")
    fails(bundle, pinned(b, witness_quorum=len(b["witnesses"]) + 1), "cosignatures")
    # One key listed twice is one witness (the text is left out, so that
    # the verdicts of the other verifiers are not in question).
    leaf_only = copy.deepcopy(b)
    del leaf_only["receipt"]
    doubled = Trust(log_key=b["log_key"], witnesses=b["witnesses"][:1] * 2, witness_quorum=2)
    fails(leaf_only, doubled, "cosignatures")


def test_an_answer_must_be_the_text_signed_for_the_messages_sent(bundle, monkeypatch):
    pytest.importorskip("openai")
    from verinfer import openai_client

    monkeypatch.setattr(openai_client, "fetch_receipt", lambda *a, **kw: copy.deepcopy(bundle))
    checker = openai_client._Checker("http://gateway/v1", "key", pinned(bundle), wait_final=False, wait=0.0)
    r = bundle["receipt"]
    info = {"receipt_id": bundle["id"], "status": "verified", "model_id": bundle["leaf"]["model"]}
    sent = {"messages": [{"role": m["role"], "content": m["content"]} for m in r["request"]["input"]["messages"]]}
    text = r["result"]["output_text"]
    assert checker.check(info, text, sent).status == "verified"
    for info_, text_, sent_ in [
        (info, text + " (edited)", sent),
        (info, text, {"messages": [{"role": "user", "content": "another question"}]}),
        (dict(info, model_id="00" * 32), text, sent),
        (dict(info, status="rejected", reason="token_mismatch"), text, sent),
    ]:
        with pytest.raises(ReceiptError) as e:
            checker.check(info_, text_, sent_)
        assert e.value.check == "answer", str(e.value)


def test_a_receipt_with_an_unknown_member_fails(bundle):
    # The receipt object itself is not hashed; only its parts are.
    bundle["receipt"]["note"] = "not part of the record"
    fails(bundle, pinned(bundle), "commitments")
    del bundle["receipt"]["note"]
    bundle["extra"] = 1
    fails(bundle, pinned(bundle), "id")
