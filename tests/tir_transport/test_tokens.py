"""Token counts against the references: Meta's own tokenizers and Meta's own chat template.

The reference prompt is the official Llama 3.1 chat template (Llama-3.1-8B-Instruct's
tokenizer_config.json, below verbatim) rendered with Jinja as transformers renders it for vLLM,
from messages prepared as vLLM prepares them; it is tokenized with Meta's `Tokenizer` class from
llama-models. Our counts come from our own renderer and loader, which share none of that code.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_models.llama3.tokenizer import (  # type: ignore[import-untyped]
    Tokenizer as MetaLlama3Tokenizer,
)
from llama_models.llama4.tokenizer import (  # type: ignore[import-untyped]
    Tokenizer as MetaLlama4Tokenizer,
)

from tir_transport import (
    ApproximateTokenCountWarning,
    Tokenizer,
    count_message_tokens,
    tokenizer_for,
)
from tir_transport._chat.tools import to_prompt_mode
from tir_transport._models.known import tokenizer_family
from tir_transport._tokens.prompt import render_llama3_prompt
from tir_transport._tokens.tokenizer import _SPECS, _read_ranks, _tokenizer_file

# Meta's chat template for Llama 3.1 Instruct, from the model's tokenizer_config.json.
LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""  # noqa: E501 (verbatim)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    # transformers replaces Jinja's tojson (which escapes HTML) with plain json.dumps.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _environment() -> ImmutableSandboxedEnvironment:
    # As transformers' chat-template environment (what vLLM renders with).
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env


TEMPLATE = _environment().from_string(LLAMA31_TEMPLATE)


def _as_vllm_prepares(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as vLLM hands them to the template (its "string" content format)."""
    prepared = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(part["text"] for part in content if part.get("type") == "text")
        item: dict[str, Any] = {"role": message["role"], "content": content or ""}
        if message.get("tool_calls") is not None:
            item["tool_calls"] = [
                {
                    **call,
                    "function": {
                        **call["function"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    },
                }
                for call in message["tool_calls"]
            ]
        if "tool_call_id" in message:
            item["tool_call_id"] = message["tool_call_id"]
        prepared.append(item)
    return prepared


def _as_vllm_dumps_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": function.get("description"),
            "parameters": function.get("parameters"),
        },
    }


META3 = MetaLlama3Tokenizer.get_instance()


def reference_prompt_tokens(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
) -> int:
    """What vLLM reports as prompt_tokens: the template's text, tokenized by the model."""
    prompt = TEMPLATE.render(
        messages=_as_vllm_prepares(messages),
        tools=None if tools is None else [_as_vllm_dumps_tool(t) for t in tools],
        add_generation_prompt=True,
        bos_token="<|begin_of_text|>",
    )
    return len(META3.encode(prompt, bos=False, eos=False, allowed_special="all"))


# -- texts -------------------------------------------------------------------------------------

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it?",
    "hindi": "भारत एक विशाल देश है, जिसकी संस्कृति हज़ारों वर्ष पुरानी है।",
    "tamil": "தமிழ் உலகின் மிகப் பழமையான மொழிகளில் ஒன்றாகும்.",
    "code": "def f(x: dict[str, int]) -> list[int]:\n    return [v * 2 for v in x.values()]\n",
    "emoji": "Party time 🎉🎉 with family 👩‍👩‍👧 and pizza 🍕!",
    "special look-alikes": "Ends with <|eot_id|> and <|begin_of_text|>, typed by a user.",
    "whitespace": "  leading\n\n\n\ttabs   and   runs \r\n trailing   ",
    "numbers": "1234567890 3.14159 1,000,000 -42",
    "empty": "",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_text_counts_equal_metas_tokenizer(text: str) -> None:
    tokenizer = tokenizer_for("llama3_1_8b_instruct")
    assert tokenizer.exact
    expected = META3.encode(text, bos=False, eos=False)
    assert tokenizer.encode(text) == expected
    assert tokenizer(text) == expected
    assert tokenizer.count(text) == len(expected)


def test_a_special_token_look_alike_is_text() -> None:
    tokenizer = tokenizer_for("llama3_1_8b_instruct")
    ids = tokenizer.encode("<|eot_id|>")
    assert len(ids) > 1
    assert META3.special_tokens["<|eot_id|>"] not in ids


def test_a_long_text_counts_as_metas() -> None:
    # Meta's encode cuts runs longer than 25,000 characters; this text has none, so it is
    # the same text for both, 100 kB of it.
    text = "".join(TEXTS.values()) * 300
    assert len(text.encode()) > 100_000
    assert tokenizer_for("llama3_1_8b_instruct").count(text) == len(
        META3.encode(text, bos=False, eos=False)
    )


@pytest.mark.parametrize(
    "model",
    ["llama_4_scout_17b_16e_instruct", "Llama-4-Maverick-17B-128E-Instruct"],
)
def test_llama4_models_use_llama4s_tokenizer(model: str) -> None:
    meta4 = MetaLlama4Tokenizer.get_instance()
    tokenizer = tokenizer_for(model)
    assert tokenizer.family == "llama4"
    for text in TEXTS.values():
        assert tokenizer.encode(text) == meta4.encode(text, bos=False, eos=False)
    # Its special tokens, numbered as Meta numbers them.
    prompt = "<|begin_of_text|><|header_start|>user<|header_end|>\n\nhi<|eot|>"
    assert tokenizer.count_prompt(prompt) == len(
        meta4.encode(prompt, bos=False, eos=False, allowed_special="all")
    )


@pytest.mark.parametrize(
    "model", ["llama3_1_8b_instruct", "meta-llama/Llama-3.1-8B-Instruct", "llama_3_3_70b"]
)
def test_llama3_names(model: str) -> None:
    assert tokenizer_for(model) is tokenizer_for("llama3_1_8b_instruct")


def test_the_tokenizer_is_shared_and_pickles_by_name() -> None:
    tokenizer = tokenizer_for("llama3_1_8b_instruct")
    assert pickle.loads(pickle.dumps(tokenizer)) is tokenizer
    assert repr(tokenizer) == "Tokenizer('llama3', exact)"


def test_unknown_models_count_approximately_with_one_warning() -> None:
    with pytest.warns(ApproximateTokenCountWarning, match="'mystery_model_x'") as caught:
        tokenizer = tokenizer_for("mystery_model_x")
        tokenizer_for("mystery_model_x")
    assert len(caught) == 1
    assert not tokenizer.exact
    text = TEXTS["english"]
    exact = tokenizer_for("llama3_1_8b_instruct").count(text)
    # One per byte: a bound on the exact count (see test_the_approximation_is_never_below...).
    assert exact <= tokenizer.count(text) == len(text.encode())
    assert tokenizer.encode(text) == [0] * tokenizer.count(text)


# -- prompts -----------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Pune"}},
            "required": ["city"],
        },
    },
}
NO_DESCRIPTION = {
    "type": "function",
    "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "पुणे"}'},
}

CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = {
    "one user message": ([{"role": "user", "content": "hi"}], None),
    "system and user": (
        [
            {"role": "system", "content": "  You are terse.\n"},
            {"role": "user", "content": "  Name three rivers in India.  "},
        ],
        None,
    ),
    "multi-turn": (
        [
            {"role": "system", "content": "Answer in Hindi."},
            {"role": "user", "content": TEXTS["english"]},
            {"role": "assistant", "content": TEXTS["hindi"]},
            {"role": "user", "content": TEXTS["tamil"]},
            {"role": "assistant", "content": TEXTS["code"]},
            {"role": "user", "content": TEXTS["emoji"]},
        ],
        None,
    ),
    "a second system message": (
        [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "again"},
        ],
        None,
    ),
    "special look-alikes in content": (
        [{"role": "user", "content": TEXTS["special look-alikes"]}],
        None,
    ),
    "content parts": (
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
            }
        ],
        None,
    ),
    "empty content": ([{"role": "user", "content": ""}], None),
    "tools": (
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Pune?"},
        ],
        [WEATHER, NO_DESCRIPTION],
    ),
    "tools without a system message": ([{"role": "user", "content": "Weather?"}], [WEATHER]),
    "tool call and result": (
        [
            {"role": "user", "content": "Weather in Pune?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": "It is sunny in पुणे.", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "Thanks"},
        ],
        [WEATHER],
    ),
    "tool result with quotes and JSON": (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": '{"temp": 31, "sky": "clear"}', "tool_call_id": "c"},
        ],
        [WEATHER],
    ),
    "tool call without tools given": (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        ],
        None,
    ),
}


@pytest.mark.parametrize(
    ("messages", "tools"), CONVERSATIONS.values(), ids=list(CONVERSATIONS.keys())
)
def test_prompt_counts_equal_the_official_template(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> None:
    assert count_message_tokens("llama3_1_8b_instruct", messages, tools) == (
        reference_prompt_tokens(messages, tools)
    )


def test_the_rendered_prompt_is_the_templates() -> None:
    messages, tools = CONVERSATIONS["tool call and result"]
    expected = TEMPLATE.render(
        messages=_as_vllm_prepares(messages),
        tools=[_as_vllm_dumps_tool(t) for t in tools or ()],
        add_generation_prompt=True,
        bos_token="<|begin_of_text|>",
    )
    assert render_llama3_prompt(messages, tools) == expected


def test_the_frame_of_one_message() -> None:
    # <|begin_of_text|>, the system turn with the date preamble (6 + 15 tokens), the user turn
    # (header 4, "hi", eot) and the generation prompt (header 4).
    assert count_message_tokens("llama3_1_8b_instruct", [{"role": "user", "content": "hi"}]) == (
        reference_prompt_tokens([{"role": "user", "content": "hi"}])
    )
    frame = count_message_tokens("llama3_1_8b_instruct", [{"role": "user", "content": ""}])
    assert count_message_tokens("llama3_1_8b_instruct", [{"role": "user", "content": "hi"}]) == (
        frame + 1
    )


def test_several_tool_calls_in_one_turn_count_as_one_turn_each() -> None:
    second = {**CALL, "id": "call_2"}
    several: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL, second]},
    ]
    split: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "assistant", "content": "", "tool_calls": [second]},
    ]
    assert count_message_tokens("llama3_1_8b_instruct", several) == reference_prompt_tokens(split)


# -- loading -----------------------------------------------------------------------------------


def test_threads_share_one_tokenizer() -> None:
    found: list[Tokenizer] = []
    threads = [
        threading.Thread(target=lambda: found.append(tokenizer_for("llama3_1_8b_instruct")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(t) for t in found}) == 1


# Runs in a fresh interpreter where neither tiktoken nor llama_models can be imported (as when
# the extra is not installed) and where opening a socket fails: counting must still work, warn
# once naming the extra, and touch no network.
WITHOUT_THE_EXTRA = """
import socket, sys, warnings

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tiktoken", "llama_models"):
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, NotInstalled())

def no_network(*args, **kwargs):
    raise AssertionError("a network call")

socket.socket.connect = no_network
socket.socket.connect_ex = no_network
socket.getaddrinfo = no_network

from tir_transport import count_message_tokens, tokenizer_for

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tokenizer = tokenizer_for("llama3_1_8b_instruct")
    count = tokenizer.count("The quick brown fox jumps over the lazy dog.")
    prompt = count_message_tokens("llama3_1_8b_instruct", [{"role": "user", "content": "hi"}])
    tokenizer_for("llama_4_scout_17b_16e_instruct").count("again")
print(tokenizer.exact, count, prompt > count)
print(len(caught), caught[0].category.__name__, caught[0].message)
"""


def test_without_the_extra_counts_are_approximate_with_one_warning() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("False ")
    assert int(first.split()[1]) >= 10  # ten tokens, exactly; approximately not fewer
    assert first.endswith(" True")
    assert second.startswith("1 ApproximateTokenCountWarning ")
    assert 'pip install "tir-llama[tokens]"' in second


def test_counting_is_fast() -> None:
    text = ("The quick brown fox. भारत தமிழ் 🍕 code() " * 3000)[:100_000]
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": TEXTS["english"] * 5}
        for i in range(50)
    ]
    tokenizer = tokenizer_for("llama3_1_8b_instruct")
    started = time.perf_counter()
    tokenizer.count(text)
    text_seconds = time.perf_counter() - started
    started = time.perf_counter()
    count_message_tokens("llama3_1_8b_instruct", history)
    history_seconds = time.perf_counter() - started
    # One request to TIR costs hundreds of milliseconds; counting must be far below that even
    # on a busy two-core CI machine.
    assert text_seconds < 0.1
    assert history_seconds < 0.05


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("llama3_1_8b_instruct", "llama3"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ("Llama-3.3-70B-Instruct", "llama3"),
        ("llama_4_scout_17b_16e_instruct", "llama4"),
        ("Llama-4-Maverick-17B-128E", "llama4"),
        # Llama 2 and 1 tokenizers (32k), not Llama 3's: counted approximately, with a warning.
        ("codellama_34b_instruct", None),
        ("CodeLlama-34b-Instruct-hf", None),
        ("llama_30b", None),
        ("llama_2_7b_chat", None),
        ("deepseek_v3", None),
    ],
)
def test_the_tokenizer_family_is_read_from_the_version_after_llama(
    model: str, family: str | None
) -> None:
    assert tokenizer_family(model) == family


# -- a count for any order ---------------------------------------------------------------------

MODEL = "llama3_1_8b_instruct"


def _big_result(rows: int) -> str:
    # A tool result the template writes as JSON: every quote and newline escaped.
    return json.dumps(
        [{"id": f"item-{k}", "tags": ["a", "b"], "n": k} for k in range(rows)], indent=2
    )


AGENT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Weather in Pune?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL]},
    {"role": "tool", "content": _big_result(6), "tool_call_id": "call_1"},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": "And the catalogue?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "content": _big_result(12), "tool_call_id": "call_1"},
]
BOUNDED = {
    **CONVERSATIONS,
    "agent with tools": (AGENT, [WEATHER, NO_DESCRIPTION]),
    "agent without tools": (AGENT, None),
    "agent without a system message": (AGENT[1:], [WEATHER]),
}


def _arrangements(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The given order, reversed (as trim_messages counts), shuffled; each with its parts."""
    rng = random.Random(27)
    orders = [messages, messages[::-1]]
    for _ in range(4):
        orders.append(rng.sample(messages, len(messages)))
    found = []
    for order in orders:
        n = len(order)
        found += [order[:k] for k in range(1, n + 1)] + [order[k:] for k in range(1, n)]
        found.append(order[::2])
    return found


@pytest.mark.parametrize(("messages", "tools"), BOUNDED.values(), ids=list(BOUNDED.keys()))
def test_the_any_order_count_bounds_every_order_and_part(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> None:
    bound = count_message_tokens(MODEL, messages, tools, any_order=True)
    for part in _arrangements(messages):
        # Counted in any order, the same bound; sent in any order, no more than it.
        assert count_message_tokens(MODEL, part[::-1], tools, any_order=True) == (
            count_message_tokens(MODEL, part, tools, any_order=True)
        )
        if tools and [m["role"] for m in part] == ["system"]:
            continue  # no message after the system one to carry the tools: vLLM says 400
        assert (
            reference_prompt_tokens(part, tools)
            <= count_message_tokens(MODEL, part, tools, any_order=True)
            <= bound
        )


@pytest.mark.parametrize(("messages", "tools"), BOUNDED.values(), ids=list(BOUNDED.keys()))
def test_the_any_order_count_in_order_is_exact_but_for_the_first_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> None:
    # A system message first is written into the system turn (5 tokens less than a turn of
    # its own); with tools, the next message goes into the user turn with the definitions
    # (its header and end of turn, 5 tokens, are the frame's).
    leading_system = messages[0]["role"] == "system"
    rest = messages[1:] if leading_system else messages
    first_plain = (
        bool(tools) and bool(rest) and not (rest[0]["role"] == "tool" or rest[0].get("tool_calls"))
    )
    slack = 5 * leading_system + 5 * first_plain
    assert count_message_tokens(MODEL, messages, tools, any_order=True) == (
        reference_prompt_tokens(messages, tools) + slack
    )


def test_the_any_order_count_adds_up() -> None:
    messages, tools = BOUNDED["agent with tools"]
    frame = count_message_tokens(MODEL, [], tools, any_order=True)
    whole = count_message_tokens(MODEL, messages, tools, any_order=True)
    for k in range(len(messages) + 1):
        head = count_message_tokens(MODEL, messages[:k], tools, any_order=True)
        tail = count_message_tokens(MODEL, messages[k:], tools, any_order=True)
        assert whole == head + tail - frame


@pytest.mark.parametrize("name", ["agent with tools", "agent without a system message", "tools"])
def test_the_any_order_count_bounds_prompt_mode(name: str) -> None:
    messages, tools = BOUNDED[name]
    assert tools
    for part in _arrangements(messages):
        sent = to_prompt_mode({"messages": part, "tools": tools})["messages"]
        assert reference_prompt_tokens(sent) <= count_message_tokens(
            MODEL, part, tools, tool_mode="prompt", any_order=True
        )


# -- without the tokenizer: a bound from the bytes ---------------------------------------------

_rng = random.Random(11)
HARD_TEXTS = {
    "hex": " ".join(_rng.randbytes(32).hex() for _ in range(8)),
    "base64": base64.b64encode(_rng.randbytes(300)).decode(),
    "uuids": "\n".join(str(uuid.UUID(bytes=_rng.randbytes(16))) for _ in range(20)),
    "digits": "".join(_rng.choice("0123456789") for _ in range(400)),
    "punctuation": "".join(_rng.choice("!@#$%^&*()[]{};:'\",.<>/?\\|`~-=+") for _ in range(300)),
    "any code points": "".join(chr(_rng.randrange(0x20, 0x3000)) for _ in range(300)),
    "astral": "".join(chr(_rng.randrange(0x10000, 0x30000)) for _ in range(100)),
    "whitespace": "".join(_rng.choice(" \t\n\r\u00a0\u3000") for _ in range(300)),
    **TEXTS,
}


def test_every_byte_is_a_token_in_both_vocabularies() -> None:
    # Why one token per byte bounds the exact count: BPE starts from the bytes and each
    # merge makes one token of two.
    for family in ("llama3", "llama4"):
        path = _tokenizer_file(_SPECS[family])
        assert path is not None
        ranks = _read_ranks(path)
        assert all(bytes([b]) in ranks for b in range(256))


@pytest.mark.parametrize("text", HARD_TEXTS.values(), ids=HARD_TEXTS.keys())
def test_the_approximation_is_never_below_the_exact_count(text: str) -> None:
    exact3 = tokenizer_for(MODEL)
    exact4 = tokenizer_for("llama_4_scout_17b_16e_instruct")
    without_the_file = Tokenizer("llama3", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximateTokenCountWarning)
        unknown = tokenizer_for("a model of no known family")
    assert without_the_file.count(text) == len(text.encode()) >= exact3.count(text)
    assert unknown.count(text) >= max(exact3.count(text), exact4.count(text))
    assert len(without_the_file.encode(text)) == without_the_file.count(text)
    prompt = render_llama3_prompt([{"role": "user", "content": text}], [WEATHER])
    assert without_the_file.count_prompt(prompt) >= exact3.count_prompt(prompt)
    assert unknown.count_prompt(prompt) >= exact3.count_prompt(prompt)


# Message counts in a fresh interpreter without the extra (as WITHOUT_THE_EXTRA below): the
# conversations come in on stdin, their counts go out on stdout.
COUNT_WITHOUT_THE_EXTRA = """
import json, sys, warnings

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tiktoken", "llama_models"):
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, NotInstalled())
warnings.simplefilter("ignore")
from tir_transport import count_message_tokens

counts = []
for model, messages, tools in json.load(sys.stdin):
    counts.append([
        count_message_tokens(model, messages, tools),
        count_message_tokens(model, messages, tools, any_order=True),
        count_message_tokens(model, messages, tools, tool_mode="prompt", any_order=True),
    ])
print(json.dumps(counts))
"""


def test_without_the_extra_message_counts_are_never_below_the_exact_ones() -> None:
    cases: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]] = []
    for model in (MODEL, "a model of no known family"):
        for text in HARD_TEXTS.values():
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": text},
                {"role": "user", "content": text},
                {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "tool", "content": text, "tool_call_id": "call_1"},
            ]
            cases += [(model, messages, None), (model, messages, [WEATHER])]
    result = subprocess.run(
        [sys.executable, "-c", COUNT_WITHOUT_THE_EXTRA],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for (_, messages, tools), counts in zip(cases, json.loads(result.stdout), strict=True):
        exact = reference_prompt_tokens(messages, tools)
        assert min(counts) >= exact
        if tools:
            sent = to_prompt_mode({"messages": messages, "tools": tools})["messages"]
            assert counts[2] >= reference_prompt_tokens(sent)
