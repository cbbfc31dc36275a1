"""The `openai` Python client against `abt serve` (run by tests/serve.rs with the server's base URL).

Every call is one a user (or a tool built on the client) makes: list models, chat, sample
several choices, offer tools, and get the client's own exception types for bad requests.
"""

import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

models = [m.id for m in client.models.list()]
assert models == ["abt-serve"], models

question = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
r = client.chat.completions.create(
    model="abt-serve", messages=question, temperature=0, max_tokens=16
)
choice = r.choices[0]
assert choice.message.role == "assistant", choice
assert isinstance(choice.message.content, str) and choice.message.content, choice
assert choice.finish_reason in ("stop", "length"), choice
assert 0 < r.usage.completion_tokens <= 16, r.usage
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# greedy is deterministic
again = client.chat.completions.create(
    model="abt-serve", messages=question, temperature=0, max_tokens=16
)
assert again.choices[0].message.content == choice.message.content

# several sampled choices, a stop string, a seed
r = client.chat.completions.create(
    model="abt-serve",
    messages=question,
    temperature=0.8,
    top_p=0.95,
    max_tokens=12,
    n=3,
    seed=7,
    stop=["\n"],
)
assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2], r.choices
assert all("\n" not in (c.message.content or "") for c in r.choices), r.choices

# tools offered (the function-calling protocol): a reply is text or tool calls
tools = [
    {
        "type": "function",
        "function": {
            "name": "execute_sql",
            "description": "Run one SQL statement on the database.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]
r = client.chat.completions.create(
    model="abt-serve",
    messages=[{"role": "user", "content": "How many rows are in table t?"}],
    tools=tools,
    temperature=0,
    max_tokens=32,
)
m = r.choices[0].message
assert m.content is not None or m.tool_calls, m

# a conversation with a tool call and its result is accepted
r = client.chat.completions.create(
    model="abt-serve",
    messages=[
        {"role": "user", "content": "How many rows are in table t?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {
                        "name": "execute_sql",
                        "arguments": '{"query": "SELECT COUNT(*) FROM t"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "[(3,)]"},
    ],
    tools=tools,
    temperature=0,
    max_tokens=16,
)
assert r.choices[0].message is not None

# the client's own exceptions for bad requests
try:
    client.chat.completions.create(model="gpt-4o", messages=question, max_tokens=4)
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", e
try:
    client.chat.completions.create(
        model="abt-serve",
        messages=[{"role": "user", "content": "word " * 20000}],
        max_tokens=4,
    )
    raise AssertionError("an oversize prompt was served")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.code == "context_length_exceeded", e
try:
    client.chat.completions.create(
        model="abt-serve", messages=question, max_tokens=4, temperature=5
    )
    raise AssertionError("temperature 5 was accepted")
except openai.BadRequestError as e:
    assert e.param == "temperature", e

print("openai client: ok")
