"""Drive a verinfer gateway with the official OpenAI Python client, unchanged.

Also: structured outputs (`chat.completions.parse` with a Pydantic model,
and the same schema streamed), a tool-call round trip (the call, the
tool's result, the final answer), streamed and not, `tool_choice: auto`
with constrained arguments, several calls streamed, and log-probabilities
streamed with each chunk's tokens.

Usage: openai_client.py URL API_KEY   (or VERINFER_URL / VERINFER_API_KEY)

URL is the gateway root (http://127.0.0.1:PORT); the client gets URL + "/v1".
Every answer must carry the `verinfer` extra object with status "verified";
the script prints each receipt id on its own line as `receipt: ID` so the
caller (crates/cli/tests/openai_client.rs) can check them with
`verinfer verify`. Exit 0, with `ok` as the last line, when every check
holds; a failed check or an exception from the client is a non-zero exit
with a traceback. Checks are explicit (`check`), never `assert`, which
`python -O` / PYTHONOPTIMIZE would strip.
"""

import json
import os
import re
import sys
from typing import Literal

import openai
from openai import OpenAI
from pydantic import BaseModel, Field

MODEL = "smollm2-135m"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CheckFailed(Exception):
    """A check of the gateway's answers that does not hold."""


def check(cond, what):
    """Raises CheckFailed with `what` unless `cond` holds."""
    if not cond:
        raise CheckFailed(what)


def verinfer_of(obj, what):
    """The `verinfer` extra field of a pydantic model returned by the client."""
    extra = obj.model_extra or {}
    check("verinfer" in extra, f"{what}: no `verinfer` in model_extra: {obj!r}")
    v = extra["verinfer"]
    # The same object must be reachable through to_dict() too.
    check(obj.to_dict().get("verinfer") == v, f"{what}: to_dict() lacks verinfer")
    check(isinstance(v, dict), f"{what}: verinfer is not an object: {v!r}")
    check(v.get("status") == "verified", f"{what}: status {v.get('status')!r}")
    rid = v.get("receipt_id")
    check(isinstance(rid, str) and HEX64.match(rid), f"{what}: receipt_id {rid!r}")
    for key in ("log_index", "model_id", "receipt_url", "node", "verifiers"):
        check(key in v, f"{what}: verinfer lacks {key}: {v!r}")
    return v


RECEIPTS = []


def receipt(rid):
    check(rid not in RECEIPTS, f"receipt {rid} returned twice")
    RECEIPTS.append(rid)
    print(f"receipt: {rid}", flush=True)


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(usage.prompt_tokens > 0, f"{what}: prompt_tokens {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"{what}: completion_tokens")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, 'usage.total_tokens == usage.prompt_tokens + usage.completion_tokens')


class Capital(BaseModel):
    """The structured answer `chat.completions.parse` asks for."""

    city: Literal["Paris", "London", "Berlin", "Madrid"]
    country: Literal["France", "England", "Germany", "Spain"]
    population_millions: int = Field(ge=0, le=100)


def structured(client):
    """Structured outputs: `parse` with a Pydantic model, then the same
    schema streamed; both answers validate and are verified."""
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    resp = client.chat.completions.parse(
        model=MODEL, messages=messages, response_format=Capital, max_tokens=64
    )
    msg = resp.choices[0].message
    check(resp.choices[0].finish_reason == "stop", resp.choices[0].finish_reason)
    check(isinstance(msg.parsed, Capital), f"parse: {msg!r}")
    receipt(verinfer_of(resp, "parse")["receipt_id"])
    print(f"parse: {msg.parsed!r}", flush=True)

    schema = Capital.model_json_schema()
    schema["additionalProperties"] = False
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=64,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Capital", "strict": True, "schema": schema},
        },
    )
    text, finish, final = "", None, None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason is not None:
                finish, final = c.finish_reason, chunk
    check(finish == "stop", f"parse stream: finish_reason {finish!r}")
    parsed = Capital.model_validate_json(text)
    receipt(verinfer_of(final, "parse stream")["receipt_id"])
    print(f"parse stream: {parsed!r}", flush=True)

    try:
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=8,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "not": {}}},
            },
        )
        raise CheckFailed("unsupported keyword: no error")
    except openai.BadRequestError as e:
        check(e.param == "response_format.json_schema.schema", e.param)
        check("`not`" in e.message, e.message)
        print(f"unsupported keyword: {e.status_code} {e.message}", flush=True)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "London", "Berlin"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def tool_round_trip(client, stream):
    """A tool call (required), the tool's result, the final answer; every
    answer verified. Streamed, the call arrives as `delta.tool_calls`."""
    what = "tools stream" if stream else "tools"
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw = dict(model=MODEL, tools=[WEATHER], max_tokens=48)
    if stream:
        calls, finish, final = {}, None, None
        for chunk in client.chat.completions.create(
            messages=messages, tool_choice="required", stream=True, **kw
        ):
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
                if c.finish_reason is not None:
                    finish, final = c.finish_reason, chunk
        check(finish == "tool_calls", f"{what}: finish_reason {finish!r}")
        check(len(calls) == 1, f"{what}: calls {calls!r}")
        call = calls[0]
        call_id, name, args = call["id"], call["name"], call["arguments"]
        v = verinfer_of(final, what)
    else:
        resp = client.chat.completions.create(messages=messages, tool_choice="required", **kw)
        choice = resp.choices[0]
        check(choice.finish_reason == "tool_calls", f"{what}: {choice.finish_reason!r}")
        tc = choice.message.tool_calls
        check(tc and len(tc) == 1, f"{what}: tool_calls {tc!r}")
        call_id, name, args = tc[0].id, tc[0].function.name, tc[0].function.arguments
        v = verinfer_of(resp, what)
    check(name == "get_weather", f"{what}: name {name!r}")
    check(call_id, f"{what}: no call id")
    check(json.loads(args).get("city") in ("Paris", "London", "Berlin"), f"{what}: {args!r}")
    receipt(v["receipt_id"])
    print(f"{what}: call {name}({args})", flush=True)

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 degrees."},
    ]
    final = client.chat.completions.create(messages=messages, tool_choice="none", **kw)
    check(final.choices[0].message.content, f"{what}: empty final answer")
    check(final.choices[0].finish_reason in ("stop", "length"), final.choices[0].finish_reason)
    receipt(verinfer_of(final, f"{what} answer")["receipt_id"])
    print(f"{what}: answer {final.choices[0].message.content!r}", flush=True)
def streamed_calls(stream, what):
    """The calls of a streamed answer, by index, as the client library
    assembles them; the finish reason and the final chunk."""
    calls, finish, final, content = {}, None, None, ""
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    check(slot["id"] is None, f"{what}: call {tc.index} has two ids")
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if c.finish_reason is not None:
                finish, final = c.finish_reason, chunk
    return calls, finish, final, content


def check_call_args(name, args, what):
    """Arguments the constraint shaped: JSON matching the function's schema."""
    check(name == "get_weather", f"{what}: name {name!r}")
    parsed = json.loads(args)
    check(set(parsed) == {"city"}, f"{what}: {args!r}")
    check(parsed["city"] in ("Paris", "London", "Berlin"), f"{what}: {args!r}")


def auto_and_parallel(client):
    """`tool_choice: auto` constrains a call's arguments; several calls in
    one answer, streamed as OpenAI streams them (index 0, 1, ...), each with
    its own id; `parallel_tool_calls: false` allows one."""
    ask = [{"role": "user", "content": "What is the weather in Paris? Call get_weather."}]
    resp = client.chat.completions.create(
        model=MODEL, messages=ask, tools=[WEATHER], tool_choice="auto", max_tokens=48
    )
    choice = resp.choices[0]
    if choice.message.tool_calls:
        check(choice.finish_reason == "tool_calls", f"auto: {choice.finish_reason!r}")
        for tc in choice.message.tool_calls:
            check_call_args(tc.function.name, tc.function.arguments, "auto")
        shown = [(t.function.name, t.function.arguments) for t in choice.message.tool_calls]
    else:
        check(not (choice.message.content or "").lstrip().startswith("{"), "auto: a call shown as text")
        shown = choice.message.content
    receipt(verinfer_of(resp, "auto")["receipt_id"])
    print(f"auto: {shown!r}", flush=True)

    two = [{"role": "user", "content": "What is the weather in Paris and in London?"}]
    for parallel in (True, False):
        what = f"parallel={parallel} stream"
        calls, finish, final, content = streamed_calls(
            client.chat.completions.create(
                model=MODEL,
                messages=two,
                tools=[WEATHER],
                tool_choice="required",
                parallel_tool_calls=parallel,
                max_tokens=64,
                stream=True,
            ),
            what,
        )
        check(finish == "tool_calls", f"{what}: finish_reason {finish!r}")
        check(content == "", f"{what}: content {content!r}")
        check(sorted(calls) == list(range(len(calls))), f"{what}: indexes {sorted(calls)!r}")
        check(parallel or len(calls) == 1, f"{what}: {len(calls)} calls")
        ids = [c["id"] for c in calls.values()]
        check(all(ids) and len(set(ids)) == len(ids), f"{what}: ids {ids!r}")
        for c in calls.values():
            check_call_args(c["name"], c["arguments"], what)
        receipt(verinfer_of(final, what)["receipt_id"])
        print(f"{what}: {[(c['id'], c['arguments']) for c in calls.values()]!r}", flush=True)


def check_logprobs(lp, what, top):
    """Chat log-probabilities: one entry per token, each with `top` best."""
    check(lp is not None and lp.content, f"{what}: no logprobs: {lp!r}")
    for t in lp.content:
        check(isinstance(t.token, str), f"{what}: token {t.token!r}")
        check(t.logprob <= 0, f"{what}: logprob {t.logprob}")
        check(bytes(t.bytes).decode("utf-8", "replace") == t.token, f"{what}: bytes of {t.token!r}")
        check(len(t.top_logprobs) == top, f"{what}: {len(t.top_logprobs)} top_logprobs")
        values = [a.logprob for a in t.top_logprobs]
        check(values == sorted(values, reverse=True), f"{what}: top not best first")
        check(t.logprob <= values[0] + 1e-5, f"{what}: chosen beats the best")
    print(f"{what}: {[(t.token, round(t.logprob, 3)) for t in lp.content]}", flush=True)


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ["VERINFER_URL"]
    key = sys.argv[2] if len(sys.argv) > 2 else os.environ["VERINFER_API_KEY"]
    base = url.rstrip("/") + "/v1"
    print(f"openai {openai.__version__} against {base}", flush=True)
    client = OpenAI(base_url=base, api_key=key, timeout=60.0, max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]

    # Models.
    ids = [m.id for m in client.models.list()]
    check(MODEL in ids, f"models: {ids}")
    print(f"models: {ids}", flush=True)

    # A non-streamed chat completion.
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16
    )
    check(resp.object == "chat.completion", resp.object)
    check(resp.model == MODEL, resp.model)
    choice = resp.choices[0]
    check(choice.message.role == "assistant", choice.message.role)
    check(choice.message.content, f"empty content: {resp!r}")
    check(choice.finish_reason in ("stop", "length"), choice.finish_reason)
    check_usage(resp.usage, "chat")
    check(resp.usage.completion_tokens <= 16, resp.usage)
    v = verinfer_of(resp, "chat")
    print(f"chat: {choice.message.content!r} ({choice.finish_reason})", flush=True)
    receipt(v["receipt_id"])

    # The raw response: the receipt header matches the body.
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=8
    )
    header = raw.headers.get("x-verinfer-receipt")
    parsed = raw.parse()
    v = verinfer_of(parsed, "raw chat")
    check(header == v["receipt_id"], f"header {header!r} != body {v['receipt_id']!r}")
    check(parsed.choices[0].message.content, "raw chat: empty content")
    receipt(v["receipt_id"])

    # A streamed chat completion, with the usage chunk asked for.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, final, usage, chunks = "", None, None, None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", chunk.object)
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                text += c.delta.content
            if c.finish_reason is not None:
                finish = c.finish_reason
                final = chunk
    check(text, "stream: no content")
    check(finish in ("stop", "length"), f"stream: finish_reason {finish!r}")
    check_usage(usage, "stream")
    v = verinfer_of(final, "stream final chunk")
    print(f"stream: {text!r} ({finish}, {chunks} chunks)", flush=True)
    receipt(v["receipt_id"])

    # Log-probabilities with the five best tokens, not streamed.
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, logprobs=True, top_logprobs=5
    )
    check_logprobs(resp.choices[0].logprobs, "logprobs", 5)
    v = verinfer_of(resp, "logprobs")
    receipt(v["receipt_id"])

    # Streamed: each chunk carries the log-probabilities of its own tokens.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        logprobs=True,
        top_logprobs=5,
        stream=True,
    )
    text, final, content, with_text = "", None, [], 0
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                text += c.delta.content
            if c.logprobs is not None and c.logprobs.content:
                content += c.logprobs.content
                if c.delta.content:
                    # The chunk's tokens make the chunk's text.
                    with_text += 1
                    check(
                        not c.delta.content.isascii()
                        or "".join(t.token for t in c.logprobs.content) == c.delta.content,
                        f"logprobs stream: chunk {c.delta.content!r} has tokens {c.logprobs.content!r}",
                    )
            if c.finish_reason is not None:
                final = chunk
    check(final is not None, "logprobs stream: no final chunk")
    check(with_text > 1, f"logprobs stream: only {with_text} chunks carried tokens")
    # (Per-token text is lossy where a token splits a character.)
    check(
        not text.isascii() or "".join(t.token for t in content) == text,
        f"logprobs stream: tokens {[t.token for t in content]!r} do not make {text!r}",
    )
    final.choices[0].logprobs.content = content
    check_logprobs(final.choices[0].logprobs, "logprobs stream", 5)
    v = verinfer_of(final, "logprobs stream final chunk")
    receipt(v["receipt_id"])

    # Two choices, each its own verified answer and receipt.
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, n=2, temperature=0.9, seed=7
    )
    check(len(resp.choices) == 2, f"n=2: {len(resp.choices)} choices")
    for i, c in enumerate(resp.choices):
        check(c.index == i, f"n=2: choice index {c.index}")
        check(c.message.content, f"n=2: choice {i} is empty")
        v = verinfer_of(c, f"n=2 choice {i}")
        receipt(v["receipt_id"])
    verinfer_of(resp, "n=2")

    # Two streamed choices.
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, n=2, stream=True
    )
    texts, finals = ["", ""], [None, None]
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                texts[c.index] += c.delta.content
            if c.finish_reason is not None:
                finals[c.index] = chunk
    for i in range(2):
        check(texts[i], f"n=2 stream: choice {i} is empty")
        check(finals[i] is not None, f"n=2 stream: choice {i} has no final chunk")
        v = verinfer_of(finals[i], f"n=2 stream choice {i}")
        receipt(v["receipt_id"])

    # A field the gateway does not serve is refused, named.
    try:
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=4, extra_body={"best_of": 2}
        )
        raise CheckFailed("best_of: no error")
    except openai.BadRequestError as e:
        check(e.status_code == 400, e.status_code)
        check(e.param == "best_of", e.param)
        print(f"best_of: {e.status_code} {e.message}", flush=True)

    # A legacy completion.
    comp = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8
    )
    check(comp.object == "text_completion", comp.object)
    check(comp.choices[0].text, f"completion: empty text: {comp!r}")
    check(comp.choices[0].finish_reason in ("stop", "length"), 'comp.choices[0].finish_reason in ("stop", "length")')
    check_usage(comp.usage, "completion")
    v = verinfer_of(comp, "completion")
    print(f"completion: {comp.choices[0].text!r}", flush=True)
    receipt(v["receipt_id"])

    structured(client)
    tool_round_trip(client, stream=False)
    tool_round_trip(client, stream=True)
    auto_and_parallel(client)

    # Errors map to the client's exception types.
    bad = OpenAI(base_url=base, api_key="vi-not-a-key", timeout=60.0, max_retries=0)
    try:
        bad.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
        raise CheckFailed("bad key: no error")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, e.status_code)
        check(e.code == "invalid_api_key", e.code)
        print(f"bad key: {e.status_code} {e.message}", flush=True)

    try:
        client.chat.completions.create(
            model="no-such-model", messages=messages, max_tokens=4
        )
        raise CheckFailed("unknown model: no error")
    except openai.NotFoundError as e:
        check(e.status_code == 404, e.status_code)
        check(e.code == "model_not_found", e.code)
        print(f"unknown model: {e.status_code} {e.message}", flush=True)

    try:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=0)
        raise CheckFailed("max_tokens=0: no error")
    except openai.BadRequestError as e:
        check(e.status_code == 400, e.status_code)
        check(e.param == "max_tokens", e.param)
        print(f"max_tokens=0: {e.status_code} {e.message}", flush=True)

    print("ok", flush=True)


if __name__ == "__main__":
    main()
