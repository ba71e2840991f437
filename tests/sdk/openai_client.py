"""The official OpenAI Python SDK as a real client of AetherFlow's gateway.

Usage: openai_client.py BASE_URL KEY MODEL SCENARIO
Prints one JSON object with what the scenario observed; the Rust test (tests/gateway.rs)
asserts on it. Scenarios: plain, stream, tools, schema, failover, budget, ratelimit, badkey.
"""

import json
import sys

import openai


def client(base, key, retries=0):
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=retries, timeout=30)


def plain(c, model):
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], temperature=0
    )
    r = raw.parse()
    return {
        "content": r.choices[0].message.content,
        "finish": r.choices[0].finish_reason,
        "model": r.model,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "provider": raw.headers.get("x-aetherflow-provider"),
        "attempts": raw.headers.get("x-aetherflow-attempts"),
        "cost_micros": raw.headers.get("x-aetherflow-cost-micros"),
        "cache": raw.headers.get("x-aetherflow-cache"),
    }


def stream(c, model):
    text, finish, usage, chunks = "", None, None, 0
    for chunk in c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
    return {"content": text, "finish": finish, "usage_completion_tokens": usage, "chunks": chunks}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def tools(c, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = c.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="auto")
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})})
    second = c.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    return {
        "first_finish": first.choices[0].finish_reason,
        "tool": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "second_content": second.choices[0].message.content,
        "second_finish": second.choices[0].finish_reason,
    }


def schema(c, model):
    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give the city as JSON"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "city",
                "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True,
            },
        },
    )
    return {"parsed": json.loads(r.choices[0].message.content)}


def failover(c, model):
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "FAIL_FIRST then answer"}]
    )
    r = raw.parse()
    return {
        "content": r.choices[0].message.content,
        "provider": raw.headers.get("x-aetherflow-provider"),
        "attempts": raw.headers.get("x-aetherflow-attempts"),
    }


def expect_error(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {
            "status": e.status_code,
            "retry_after": e.response.headers.get("retry-after"),
            "message": str(body.get("message", e.message)),
            "error_class": type(e).__name__,
        }
    return {"status": 200}


def budget(c, model):
    return expect_error(
        lambda: c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Write a long essay"}], max_tokens=4000
        )
    )


def ratelimit(c, model):
    last = {}
    for _ in range(10):
        last = expect_error(
            lambda: c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        )
        if last["status"] == 429:
            break
    return last


def badkey(c, model):
    return expect_error(
        lambda: c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    )


def main():
    base, key, model, scenario = sys.argv[1:5]
    c = client(base, "afk_000000000000_not-a-real-key" if scenario == "badkey" else key)
    result = globals()[scenario](c, model)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
