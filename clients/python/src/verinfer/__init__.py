"""verinfer: check verinfer receipts, and get checked answers.

>>> from verinfer import VerifiedOpenAI
>>> client = VerifiedOpenAI(base_url="http://127.0.0.1:8080/v1", api_key=KEY)
>>> client.chat.completions.create(model="smollm2-135m", messages=[...]).verinfer.status
'verified'

:func:`verify_receipt` checks a receipt bundle against the keys a
:class:`Trust` pins; :func:`fetch_receipt` gets one from a gateway.
`VerifiedOpenAI` needs the `openai` package and is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .canonical import CanonicalError, canonical
from .client import FetchError, fetch_receipt
from .merkle import ProofError, verify_consistency, verify_inclusion
from .note import Checkpoint, Note, NoteError, VerifierKey
from .receipt import PendingError, ReceiptError, Report, Trust, required_verdicts, verify_receipt

__all__ = [
    "CanonicalError",
    "Checkpoint",
    "FetchError",
    "Note",
    "NoteError",
    "PendingError",
    "ProofError",
    "ReceiptError",
    "Report",
    "Trust",
    "Verified",
    "VerifiedOpenAI",
    "VerifierKey",
    "canonical",
    "fetch_receipt",
    "required_verdicts",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The openai wrapper is loaded on first use, so checking receipts does
    # not need the openai package.
    if name in ("VerifiedOpenAI", "Verified"):
        from . import openai_client

        return getattr(openai_client, name)
    raise AttributeError(f"module 'verinfer' has no attribute {name!r}")
