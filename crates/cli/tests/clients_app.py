"""An app that gets checked answers from a verinfer gateway through
`verinfer.VerifiedOpenAI` (the official openai client, wrapped).

Usage: clients_app.py URL API_KEY LOG_KEY

Prints `receipt: ID` for each checked answer (non-streamed, streamed, a
legacy completion, and one that waits for a cosigned checkpoint), then
checks that a client pinning another log key refuses an answer, and ends
with `ok`. Checks are explicit (`check`), never `assert`.
"""

import base64
import sys

from verinfer import ReceiptError, Trust, VerifiedOpenAI
from verinfer.note import key_id

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Name a colour."}]


class CheckFailed(Exception):
    """A check that does not hold."""


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def main():
    url, key, log_key = sys.argv[1:4]
    base = url.rstrip("/") + "/v1"
    client = VerifiedOpenAI(base_url=base, api_key=key, trust=Trust(log_key=log_key), timeout=60.0, max_retries=0)

    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    v = resp.verinfer
    check(v.status == "verified", f"chat: status {v.status}")
    check(resp.choices[0].message.content == v.report.receipt["result"]["output_text"], "chat: text")
    print(f"chat: {resp.choices[0].message.content!r} final={v.final}", flush=True)
    print(f"receipt: {v.receipt_id}", flush=True)

    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, stream=True)
    text = ""
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
    v = stream.verinfer
    check(v is not None and v.status == "verified", f"stream: {v}")
    check(text == v.report.receipt["result"]["output_text"], "stream: text")
    print(f"stream: {text!r} final={v.final}", flush=True)
    print(f"receipt: {v.receipt_id}", flush=True)

    comp = client.completions.create(model=MODEL, prompt="Red, green and", max_tokens=4)
    check(comp.verinfer.status == "verified", f"completion: {comp.verinfer.status}")
    print(f"receipt: {comp.verinfer.receipt_id}", flush=True)

    final = VerifiedOpenAI(base_url=base, api_key=key, trust=Trust(log_key=log_key), wait_final=True, wait=60.0)
    resp = final.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
    v = resp.verinfer
    check(v.final and v.report.checkpoint is not None and v.report.cosigners, f"wait_final: {v}")
    print(f"final: checkpoint size {v.report.checkpoint.size}, cosigners {v.report.cosigners}", flush=True)
    print(f"receipt: {v.receipt_id}", flush=True)

    # Pinning another key under the log's name: its checkpoints no longer verify.
    name, key_bytes = log_key.split("+")[0], bytes(range(32))
    other = f"{name}+{key_id(name, 1, key_bytes):08x}+{base64.b64encode(bytes([1]) + key_bytes).decode()}"
    wrong = VerifiedOpenAI(base_url=base, api_key=key, trust=Trust(log_key=other), wait_final=True, wait=60.0)
    try:
        wrong.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
        raise CheckFailed("a wrong pinned log key was accepted")
    except ReceiptError as e:
        check(e.check == "log", f"wrong log key: {e.check}: {e}")
        print(f"wrong log key: {e}", flush=True)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
