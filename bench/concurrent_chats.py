"""N concurrent chats of 16 tokens against an OpenAI-compatible server (the
requests crates/node/benches/network.rs sends the devnet): answers/s.

    python3 bench/concurrent_chats.py URL 1,8,50

N may be a comma-separated list: each count runs in turn. The API key, if
the server wants one (verinfer's gateway does), is read from
$VERINFER_API_KEY, the model's name from $CHAT_MODEL (smollm2-135m). Against verinfer, only answers whose `verinfer.status` is
`verified` count; any other answer fails the run."""
import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def chat(url, i):
    body = json.dumps({
        "model": os.environ.get("CHAT_MODEL", "smollm2-135m"),
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": f"Count to {i}."}],
    }).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("VERINFER_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['VERINFER_API_KEY']}"
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=300) as r:
        answer = json.load(r)
    status = answer.get("verinfer", {}).get("status")
    if status not in (None, "verified"):
        raise RuntimeError(f"answer {i} is {status}, not verified")
    return answer["usage"]["completion_tokens"]


def run(url, n):
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        tokens = sum(pool.map(lambda i: chat(url, i), range(n)))
    secs = time.perf_counter() - t
    print(f"{n} concurrent chats of 16 tokens: {secs:.2f} s, {n / secs:.2f} answers/s "
          f"({tokens / secs:.0f} output tokens/s)", flush=True)


def main():
    url, counts = sys.argv[1], [int(n) for n in sys.argv[2].split(",")]
    chat(url, 0)  # warm
    for n in counts:
        run(url, n)


if __name__ == "__main__":
    main()
