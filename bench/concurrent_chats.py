"""N concurrent chats of 16 tokens against an OpenAI-compatible server (the
requests crates/node/benches/network.rs sends the devnet): answers/s."""
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def chat(url, i):
    body = json.dumps({
        "model": "smollm2-135m",
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": f"Count to {i}."}],
    }).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        answer = json.load(r)
    return answer["usage"]["completion_tokens"]


def main():
    url, n = sys.argv[1], int(sys.argv[2])
    chat(url, 0)  # warm
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        tokens = sum(pool.map(lambda i: chat(url, i), range(n)))
    secs = time.perf_counter() - t
    print(f"{n} concurrent chats of 16 tokens: {secs:.2f} s, {n / secs:.1f} answers/s "
          f"({tokens / secs:.0f} output tokens/s)")


if __name__ == "__main__":
    main()
