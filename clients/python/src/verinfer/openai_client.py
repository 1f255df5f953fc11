"""`VerifiedOpenAI`: the official `openai` client, with every answer checked.

It is the `openai.OpenAI` client pointed at a verinfer gateway; chat and
legacy completions, streamed or not, come back as the client returns them,
each after its receipt was fetched and checked (:func:`verify_receipt`) and
the text received was found to be the text the inference node signed, for
the prompt sent. The answer carries `.verinfer`, a :class:`Verified`. A
check that fails raises :class:`ReceiptError`; for a stream, when the stream
ends. With `wait_final=True` it also waits for a cosigned checkpoint to
cover the receipt and requires it (else a receipt not yet covered passes
with `final` False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional

import openai

from .canonical import canonical
from .client import fetch_receipt, gateway_root
from .receipt import Report, ReceiptError, Trust, verify_receipt


@dataclass
class Verified:
    """A checked answer: its receipt id, status (`verified` or `provisional`),
    whether a cosigned checkpoint covers it (`final`), the checked report and
    the receipt bundle."""

    receipt_id: str
    status: str
    final: bool
    report: Report
    bundle: Dict[str, Any]


def _extra(obj: Any) -> Optional[Mapping[str, Any]]:
    extra = getattr(obj, "model_extra", None) or {}
    v = extra.get("verinfer")
    return v if isinstance(v, Mapping) else None


class _Checker:
    def __init__(self, url: str, api_key: str, trust: Optional[Trust], wait_final: bool, wait: float) -> None:
        self.url = gateway_root(url)
        self.api_key = api_key
        self.trust = trust
        self.wait_final = wait_final
        self.wait = wait

    def check(self, info: Optional[Mapping[str, Any]], text: Optional[str], sent: Mapping[str, Any]) -> Verified:
        if info is None or info.get("status") == "rejected" or not info.get("receipt_id"):
            reason = (info or {}).get("reason") or "no verinfer receipt in the answer"
            raise ReceiptError("answer", f"the answer was not verified: {reason}")
        bundle = fetch_receipt(
            self.url, str(info["receipt_id"]), api_key=self.api_key, wait=self.wait if self.wait_final else 0.0
        )
        report = verify_receipt(bundle, self.trust, allow_pending=not self.wait_final)
        r = report.receipt
        if r is None:
            raise ReceiptError("answer", "the receipt's text was not disclosed: use the API key of the account that paid")
        if text != r["result"].get("output_text"):
            raise ReceiptError("answer", "the text received is not the text the inference node signed")
        if info.get("model_id") != report.model:
            raise ReceiptError("answer", "the answer names another model than its receipt")
        signed = r["request"].get("input") or {}
        messages = sent.get("messages")
        if messages is not None and all(isinstance(m.get("content"), str) for m in messages):
            mine = [[m.get("role"), m.get("content")] for m in messages]
            theirs = [[m.get("role"), m.get("content")] for m in signed.get("messages") or []]
            if canonical(mine) != canonical(theirs):
                raise ReceiptError("answer", "the receipt's request holds other messages than the ones sent")
        prompt = sent.get("prompt")
        if isinstance(prompt, str) and signed.get("prompt") != prompt:
            raise ReceiptError("answer", "the receipt's request holds another prompt than the one sent")
        return Verified(report.id, report.status, report.final, report, bundle)


class _VerifiedStream:
    """Iterates a stream's chunks; when it ends, checks the answer and sets
    `.verinfer` (on itself and on the chunk that carried the receipt)."""

    def __init__(self, stream: Any, checker: _Checker, sent: Mapping[str, Any], chat: bool) -> None:
        self._stream = stream
        self._checker = checker
        self._sent = sent
        self._chat = chat
        self.verinfer: Optional[Verified] = None

    def __iter__(self) -> Iterator[Any]:
        text: List[str] = []
        info: Optional[Mapping[str, Any]] = None
        carrier = None
        for chunk in self._stream:
            for c in chunk.choices or []:
                piece = c.delta.content if self._chat else c.text
                if piece:
                    text.append(piece)
            found = _extra(chunk)
            if found is not None:
                info, carrier = found, chunk
                continue
            yield chunk
        self.verinfer = self._checker.check(info, "".join(text), self._sent)
        if carrier is not None:
            setattr(carrier, "verinfer", self.verinfer)
            yield carrier

    def close(self) -> None:
        """Closes the underlying response."""
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "_VerifiedStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Create:
    def __init__(self, resource: Any, checker: _Checker, chat: bool) -> None:
        self._resource = resource
        self._checker = checker
        self._chat = chat

    def create(self, **kwargs: Any) -> Any:
        """As the openai client's `create`; the answer carries `.verinfer`."""
        answer = self._resource.create(**kwargs)
        if kwargs.get("stream"):
            return _VerifiedStream(answer, self._checker, kwargs, self._chat)
        choice = answer.choices[0] if answer.choices else None
        text = (choice.message.content if self._chat else choice.text) if choice is not None else None
        setattr(answer, "verinfer", self._checker.check(_extra(answer), text, kwargs))
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)


class _Chat:
    def __init__(self, chat: Any, checker: _Checker) -> None:
        self.completions = _Create(chat.completions, checker, chat=True)
        self._chat = chat

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class VerifiedOpenAI:
    """`openai.OpenAI` for a verinfer gateway, checking every answer.

    `base_url` is the gateway's OpenAI base (`http://HOST:PORT/v1`) and
    `api_key` the account's key (needed to see the receipt's text). `trust`
    pins the log's and the witnesses' keys (:class:`Trust`; default: the
    receipt's own). `wait_final` waits up to `wait` seconds for a cosigned
    checkpoint and requires it. Other keyword arguments go to `openai.OpenAI`.
    Only `chat.completions.create` and `completions.create` are checked;
    everything else (`models`, `with_raw_response`, ...) is the wrapped
    client's own, unchecked.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        trust: Optional[Trust] = None,
        wait_final: bool = False,
        wait: float = 60.0,
        **kwargs: Any,
    ) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, **kwargs)
        checker = _Checker(base_url, api_key, trust, wait_final, wait)
        self.chat = _Chat(self.client.chat, checker)
        self.completions = _Create(self.client.completions, checker, chat=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)
