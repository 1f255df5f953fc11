"""`python -m verinfer verify FILE|--url URL ID`: `verinfer verify` in Python.

Checks a receipt bundle from a file (`-`: stdin) or from a gateway (which it
re-fetches for up to `--wait` seconds while no cosigned checkpoint covers
the receipt), with the keys pinned by `--log-key`, `--witness` and
`--witness-quorum`, else those the receipt names. Exit status as the Rust
`verinfer verify`: 0 when every check holds, 1 when one fails, 2 when the
receipt could not be checked (usage, unreadable file, HTTP failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List, Optional

from .client import FetchError, fetch_receipt
from .receipt import Report, ReceiptError, Trust, verify_receipt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verinfer", description="Check verinfer receipts with no trust in any node.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a receipt bundle")
    v.add_argument("receipt", nargs="?", metavar="RECEIPT|ID", help='a bundle file ("-": stdin); with --url, the receipt id')
    v.add_argument("--url", help="gateway to fetch the receipt from: GET {URL}/v1/receipts/{ID}")
    v.add_argument("--api-key", default=os.environ.get("VERINFER_API_KEY"), help="API key for --url (discloses the text to its owner)")
    v.add_argument("--wait", type=float, default=30.0, metavar="SECS", help="with --url: seconds to wait for a cosigned checkpoint")
    v.add_argument("--log-key", metavar="VKEY", help="pin the log's verifier key")
    v.add_argument("--witness", action="append", default=[], metavar="VKEY", help="pin a witness key (repeatable)")
    v.add_argument("--witness-quorum", type=int, metavar="N", help="cosignatures a checkpoint needs")
    v.add_argument("--out", metavar="FILE", help="save the fetched bundle to FILE")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _print(report: Report) -> None:
    def origin(pinned: bool) -> str:
        return "pinned" if pinned else "taken from the receipt"

    t = report.trust
    print(f"receipt {report.id} (log index {report.index})")
    print("  ok  id is the hash of the log leaf")
    if report.receipt is not None:
        print("  ok  the receipt opens the leaf's commitments (request, result, certificate, fees)")
        print("  ok  request and result signatures")
        print(f"  ok  certificate: {len(report.verifiers)} accepting verdict(s) by trusted verifiers, {report.verdicts_required} required by the policy")
    else:
        print("  --  the receipt's text and certificate were not disclosed: only the leaf was checked")
    if report.checkpoint is not None:
        print(f"  ok  checkpoint of {report.checkpoint.origin} at size {report.checkpoint.size} signed by the log key ({origin(t.log_key_pinned)})")
        print(f"  ok  inclusion proof of index {report.index} in the checkpoint's tree")
        print(f"  ok  {len(report.cosigners)} witness cosignature(s), {t.witness_quorum} required (witnesses {origin(t.witnesses_pinned)})")
    print(f"status: {report.status}")


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.witness_quorum is not None and args.witness_quorum < 1:
        print("error: --witness-quorum must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.url:
            if not args.receipt:
                raise FetchError("--url needs the receipt ID to fetch")
            bundle: Any = fetch_receipt(args.url, args.receipt, api_key=args.api_key, wait=args.wait)
        else:
            name = args.receipt or "-"
            with (open(name, encoding="utf-8") if name != "-" else sys.stdin) as f:
                bundle = json.load(f)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
    except ReceiptError as e:
        print(f"error: the receipt does not verify: {e}", file=sys.stderr)
        return 1
    except (FetchError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trust = Trust(log_key=args.log_key, witnesses=args.witness, witness_quorum=args.witness_quorum)
    try:
        report = verify_receipt(bundle, trust)
    except ReceiptError as e:
        if args.json:
            print(json.dumps({"ok": False, "check": e.check, "error": str(e)}, indent=2))
        print(f"error: the receipt does not verify: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, "id": report.id, "index": report.index, "status": report.status,
                          "verifiers": report.verifiers, "cosigners": report.cosigners}, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
