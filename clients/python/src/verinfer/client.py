"""Fetching receipts from a gateway (the standard library's urllib)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

from .receipt import ReceiptError

_ID = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """The gateway could not be asked, or did not answer a receipt bundle."""


def _get_json(url: str, api_key: Optional[str], timeout: float) -> Any:
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace").strip()
        try:
            text = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise FetchError(f"fetching {url}: HTTP {e.code}: {text}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"fetching {url}: {e}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(f"{url} did not answer JSON") from None


def fetch_receipt(
    url: str, receipt_id: str, *, api_key: Optional[str] = None, wait: float = 0.0, timeout: float = 30.0
) -> Dict[str, Any]:
    """Fetches receipt `receipt_id` from the gateway at `url`
    (`GET {url}/v1/receipts/{id}`; with the paying account's `api_key` the
    receipt's text is disclosed), re-fetching every 0.5 s for up to `wait`
    seconds while no cosigned checkpoint covers it. A gateway serving
    another receipt than the one asked for raises :class:`ReceiptError`."""
    if not isinstance(receipt_id, str) or not _ID.fullmatch(receipt_id):
        raise FetchError(f"{receipt_id!r} is not a receipt id (64 lowercase hex digits)")
    endpoint = f"{gateway_root(url)}/v1/receipts/{receipt_id}"
    deadline = time.monotonic() + wait
    while True:
        bundle = _get_json(endpoint, api_key, timeout)
        if not isinstance(bundle, dict):
            raise FetchError(f"{endpoint} did not serve a receipt bundle")
        if bundle.get("id") != receipt_id:
            raise ReceiptError("id", f"asked for receipt {receipt_id}, got receipt {bundle.get('id')}")
        if bundle.get("checkpoint") or time.monotonic() >= deadline:
            return bundle
        time.sleep(0.5)


def gateway_root(url: str) -> str:
    """The gateway's root URL from either its root or its OpenAI base (`.../v1`)."""
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root
