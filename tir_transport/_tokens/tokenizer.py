"""Token counts as the server counts them: Meta's own tokenizers, offline, and Llama's chat frame.

With the `[tokens]` extra, Meta's `llama-models` wheel supplies the tokenizer files
(`llama_models/llama3/tokenizer.model`, `llama_models/llama4/tokenizer.model`: tiktoken's BPE
format) and tiktoken reads them. Only the files are read: nothing of `llama_models` is imported,
so its own dependencies are never loaded here. Without the extra, or for a model with no known
tokenizer, counts are approximate, with one warning per process that says so.

Prompt counts mirror what vLLM does for a chat request: render Meta's chat template for Llama 3.1
(`render_llama3_prompt`, the same text as the official Jinja template) and tokenize the whole text,
special tokens counted as one token each.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._chat.tools import ToolMode, message_text, to_prompt_mode, tool_names
from .._models import TokenizerFamily, tokenizer_family

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "TOKENS_EXTRA_HINT",
    "ApproximateTokenCountWarning",
    "Tokenizer",
    "count_message_tokens",
    "render_llama3_prompt",
    "render_llama4_prompt",
    "tokenizer_for",
]

TOKENS_EXTRA_HINT = 'pip install "tir-llama[tokens]"'


class ApproximateTokenCountWarning(UserWarning):
    """Token counts are approximate: the tokenizer is not installed, or the model is unknown."""


@dataclass(frozen=True)
class _Spec:
    resource: str  # the tokenizer file, inside the llama_models package
    pattern: str  # the pre-tokenizer regex (as in llama-models' tokenizer.py)
    special: tuple[str, ...]  # special tokens, numbered from the end of the BPE ranks


def _llama3_special() -> tuple[str, ...]:
    # Named as in Hugging Face's Llama 3.1 tokenizer, the one vLLM serves Llama 3.1 with: ids
    # 128005 and 128011 are reserved there (llama-models' later `<|step_id|>`, `<|image|>`),
    # so such a literal in a message is ordinary text to the server, and to us.
    named = (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|reserved_special_token_3|>",
    )
    reserved = tuple(f"<|reserved_special_token_{4 + i}|>" for i in range(256 - len(named)))
    return named + reserved


def _llama4_special() -> tuple[str, ...]:
    def reserved(name: str, count: int, start: int = 0) -> tuple[str, ...]:
        return tuple(f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count))

    text = (
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|step|>",
        *(f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6)),
        "<|python_start|>",
        "<|python_end|>",
        "<|finetune_right_pad|>",
        *reserved("text_post_train", 61, 8),
    )
    vision = (
        "<|image_start|>",
        "<|image_end|>",
        "<|vision_reserved_special_token_0|>",
        "<|vision_reserved_special_token_1|>",
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
        *(f"<|vision_reserved_special_token_{i}|>" for i in range(2, 6)),
        "<|image|>",
        "<|vision_reserved_special_token_6|>",
        "<|patch|>",
        *reserved("vision", 1041, 7),
    )
    reasoning = (
        *reserved("reasoning", 8),
        "<|reasoning_thinking_start|>",
        "<|reasoning_thinking_end|>",
    )
    basic = (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
    )
    named = basic + text + vision + reasoning
    return named + tuple(f"<|reserved_special_token_{i}|>" for i in range(2048 - len(named)))


_SPECS: dict[TokenizerFamily, _Spec] = {
    "llama3": _Spec(
        "llama3/tokenizer.model",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        _llama3_special(),
    ),
    "llama4": _Spec(
        "llama4/tokenizer.model",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        _llama4_special(),
    ),
}

# -- the approximation: a bound from the bytes ----------------------------------------------

# Llama 3's and Llama 4's BPE vocabularies hold every single byte as a token, and each merge
# joins two tokens into one: a piece of text never takes more tokens than it has UTF-8 bytes
# (a special token is one token). So, without the tokenizer file, one token per byte is a
# count the exact one never exceeds, whatever the text (hex, base64, any script); it is also
# a bound for any other byte-level BPE tokenizer (and SentencePiece with byte fallback), which
# is why models without a known tokenizer are counted the same way. It is high: about 4 times
# the exact count for English, 2 for hex or base64, 3 to 5 for Indian scripts.
_SPECIAL_LOOK = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def _byte_count(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


# -- tokenizers --------------------------------------------------------------------------------


class Tokenizer:
    """A model family's tokenizer: exact (Meta's BPE file through tiktoken) or approximate.

    Callable as `tokenizer(text) -> list[int]`, which is what LlamaIndex's `Settings.tokenizer`
    and `TokenCountingHandler(tokenizer=...)` take. Get one with `tokenizer_for(model)`; they are
    shared, loaded once per process, and safe to use from several threads.
    """

    __slots__ = ("_encoding", "_special", "family")

    def __init__(self, family: str, encoding: tiktoken.Encoding | None) -> None:
        self.family = family
        self._encoding = encoding
        # Without the file, the family's special tokens are still known by name (one token
        # each in a prompt); a model of no known family has none we could count as one.
        spec = _SPECS.get(cast(TokenizerFamily, family))
        self._special: frozenset[str] = frozenset(spec.special) if spec else frozenset()

    @property
    def exact(self) -> bool:
        """Whether counts are the model's own (False: approximate, the extra is missing)."""
        return self._encoding is not None

    def encode(self, text: str) -> list[int]:
        """The token ids of plain text; look-alikes of special tokens (`<|eot_id|>`) are text.

        Without the tokenizer, the ids are placeholders (zeros), one per UTF-8 byte: only
        their number means something, and it is never below the exact count.
        """
        if self._encoding is None:
            return [0] * _byte_count(text)
        return self._encoding.encode_ordinary(text)

    __call__ = encode

    def count(self, text: str) -> int:
        """How many tokens plain text takes (without the tokenizer: its UTF-8 bytes, a bound)."""
        if self._encoding is None:
            return _byte_count(text)
        return len(self._encoding.encode_ordinary(text))

    def count_prompt(self, prompt: str) -> int:
        """How many tokens a rendered prompt takes, special tokens read as special.

        This is what vLLM does with the text its chat template produces: its tokenizer finds
        `<|eot_id|>` (and the like) anywhere in the text, message contents included.
        Without the tokenizer: the UTF-8 bytes, each special token of the family one.
        """
        if self._encoding is None:
            count = _byte_count(prompt)
            if self._special:
                for found in _SPECIAL_LOOK.finditer(prompt):
                    if found.group() in self._special:
                        count -= len(found.group()) - 1
            return count
        if "<|" not in prompt:
            # No special token can be in it, and this path skips handing tiktoken the set of
            # special tokens, which costs more than counting a short text.
            return len(self._encoding.encode_ordinary(prompt))
        return len(self._encoding.encode(prompt, allowed_special="all"))

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "approximate"
        return f"Tokenizer({self.family!r}, {kind})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickled by name (for Ray workers and the like): the other process loads its own.
        return (_by_family, (self.family,))


_LOCK = threading.Lock()
_LOADED: dict[str, Tokenizer] = {}
_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(message, ApproximateTokenCountWarning, stacklevel=3)


def _tokenizer_file(spec: _Spec) -> Path | None:
    # find_spec of a top-level package locates it without importing it.
    found = importlib.util.find_spec("llama_models")
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        path = Path(location) / spec.resource
        if path.is_file():
            return path
    return None


def _read_ranks(path: Path) -> dict[bytes, int]:
    # tiktoken's format: one "base64-token rank" per line. Read here rather than with
    # tiktoken.load, which may cache files in a temporary folder: this only reads.
    ranks: dict[bytes, int] = {}
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _load(family: TokenizerFamily) -> tiktoken.Encoding | None:
    try:
        import tiktoken
    except ImportError:
        return None
    spec = _SPECS[family]
    path = _tokenizer_file(spec)
    if path is None:
        return None
    ranks = _read_ranks(path)
    first = len(ranks)
    return tiktoken.Encoding(
        name=f"tir-{family}",
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens={token: first + i for i, token in enumerate(spec.special)},
    )


def _by_family(family: str) -> Tokenizer:
    tokenizer = _LOADED.get(family)
    if tokenizer is not None:
        return tokenizer
    if family not in _SPECS:
        return Tokenizer(family, None)
    with _LOCK:
        # Loading takes a quarter of a second; one thread does it, the others wait for it.
        tokenizer = _LOADED.get(family)
        if tokenizer is None:
            tokenizer = Tokenizer(family, _load(family))
            _LOADED[family] = tokenizer
    if not tokenizer.exact:
        _warn_once(
            "extra",
            "Token counts are approximate: the Llama tokenizer is not installed, so a text "
            "counts one token per UTF-8 byte (never fewer than the exact count, often 2 to 5 "
            f"times more). For exact counts, offline: {TOKENS_EXTRA_HINT}",
        )
    return tokenizer


def tokenizer_for(model: str) -> Tokenizer:
    """The tokenizer of a model, by API name: shared, loaded on first use, never downloaded.

    Llama 3.x models use Llama 3's tokenizer, Llama 4 models Llama 4's. Without the `[tokens]`
    extra, or for a model whose tokenizer is not known, counts are approximate, and an
    `ApproximateTokenCountWarning` says so once per process.
    """
    family = tokenizer_family(model)
    if family is None:
        _warn_once(
            f"model:{model}",
            f"Token counts for {model!r} are approximate: its tokenizer is not known, so a "
            "text counts one token per UTF-8 byte, in Llama 3.1's chat frame (exact counts "
            "cover Llama 3.x and Llama 4 models).",
        )
        return _by_family("approximate")
    return _by_family(family)


# -- the chat frame ----------------------------------------------------------------------------

_LLAMA3_SYSTEM_HEADER = "<|start_header_id|>system<|end_header_id|>\n\n"
_LLAMA3_EOT = "<|eot_id|>"
# Meta's template, first user turn when tools are given (tools_in_user_message, its default).
# No space before "Do not use variables.": the template joins the strings as they are.
_LLAMA3_TOOLS_INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    "and its value}.Do not use variables.\n\n"
)
DATE_STRING = "26 Jul 2024"  # the template's default; vLLM passes no other


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def _json(value: Any, indent: int | None = None) -> str:
    # transformers' tojson, which vLLM's template rendering uses: json.dumps, no HTML escaping.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _server_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    # vLLM passes tools to the template as its pydantic models dumped: every declared field,
    # None included, in declaration order, then the extra fields it allows.
    function = dict(tool.get("function") or {})
    dumped_function = {
        "name": function.pop("name", None),
        "description": function.pop("description", None),
        "parameters": function.pop("parameters", None),
        **function,
    }
    rest = {k: v for k, v in tool.items() if k not in ("type", "function")}
    return {"type": tool.get("type", "function"), "function": dumped_function, **rest}


def _arguments(raw: Any) -> Any:
    # vLLM turns the wire's JSON string into a dict before rendering (templates expect one).
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _content(message: Mapping[str, Any]) -> str:
    # vLLM hands this template a string: text parts joined by newlines.
    return message_text(message.get("content"))


def _split_system(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[str, list[Mapping[str, Any]]]:
    """The leading system message's text (stripped; empty if none) and the other messages."""
    rest = list(messages)
    if rest and rest[0].get("role") == "system":
        return _content(rest[0]).strip(), rest[1:]
    return "", rest


def _llama3_turn(message: Mapping[str, Any]) -> str:
    """A message as the template writes it after the first turns (header to end of turn)."""
    role = str(message.get("role"))
    calls = message.get("tool_calls") if role == "assistant" else None
    if calls:
        # The template takes one call per turn (more: vLLM answers 400); several are
        # counted as one turn each, which is how a history can carry them.
        return "".join(
            _header("assistant")
            + '{"name": "'
            + str((call.get("function") or {}).get("name", ""))
            + '", "parameters": '
            + _json(_arguments((call.get("function") or {}).get("arguments")))
            + "}"
            + _LLAMA3_EOT
            for call in calls
        )
    if role in ("tool", "ipython"):
        # A string is "iterable" to Jinja, so the template writes tool results as JSON.
        return _header("ipython") + _json(_content(message)) + _LLAMA3_EOT
    return _header(role) + _content(message).strip() + _LLAMA3_EOT


def render_llama3_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text vLLM builds for Llama 3.1 Instruct from a chat request.

    The same text as Meta's chat template (tokenizer_config.json of Llama-3.1-8B-Instruct)
    renders from the messages as vLLM prepares them: tool-call arguments parsed into objects,
    content parts joined, tools as vLLM's models dumped.

    Args:
        messages: OpenAI-style message dicts, as sent on the wire.
        tools: OpenAI-style tool definitions, as sent on the wire.
        add_generation_prompt: end with the assistant header (vLLM's default).

    Returns:
        The prompt, special tokens as text.
    """
    parts = ["<|begin_of_text|>"]
    system, rest = _split_system(messages)
    parts.append(_LLAMA3_SYSTEM_HEADER)
    if tools is not None:
        parts.append("Environment: ipython\n")
    parts.append(f"Cutting Knowledge Date: December 2023\nToday Date: {DATE_STRING}\n\n")
    parts.append(system + _LLAMA3_EOT)
    if tools is not None:
        # The template refuses tools without a first message to carry them (vLLM: a 400);
        # counted here as if that message were empty, so that counting never fails.
        first = _content(rest[0]).strip() if rest else ""
        rest = rest[1:]
        parts.append(_header("user") + _LLAMA3_TOOLS_INSTRUCTION)
        parts.extend(_json(_server_tool(t), indent=4) + "\n\n" for t in tools)
        parts.append(first + _LLAMA3_EOT)
    parts.extend(_llama3_turn(message) for message in rest)
    if add_generation_prompt:
        parts.append(_header("assistant"))
    return "".join(parts)


def _llama4_turn(message: Mapping[str, Any]) -> str:
    """A message after the system turn, in Llama 4's chat frame."""
    role = str(message.get("role"))
    role = "ipython" if role == "tool" else role
    text = _content(message).strip()
    for call in message.get("tool_calls") or () if role == "assistant" else ():
        function = call.get("function") or {}
        text += _json(
            {
                "name": function.get("name", ""),
                "parameters": _arguments(function.get("arguments")),
            }
        )
    return f"<|header_start|>{role}<|header_end|>\n\n{text}<|eot|>"


def render_llama4_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Llama 4's chat frame, as llama-models' chat_format writes it (close, not checked).

    Turns are `<|header_start|>role<|header_end|>` + two newlines + content + `<|eot|>`, with
    no default system preamble; tool definitions are counted as JSON in the system turn.
    """
    parts = ["<|begin_of_text|>"]
    system, rest = _split_system(messages)
    if tools:
        system = "".join(_json(_server_tool(t), indent=4) + "\n\n" for t in tools) + system
    if system:
        parts.append(f"<|header_start|>system<|header_end|>\n\n{system}<|eot|>")
    parts.extend(_llama4_turn(message) for message in rest)
    parts.append("<|header_start|>assistant<|header_end|>\n\n")
    return "".join(parts)


def count_message_tokens(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_mode: ToolMode = "native",
    any_order: bool = False,
) -> int:
    """The prompt tokens a chat request takes: what vLLM reports as `prompt_tokens`.

    Exact for Llama 3.x models with the `[tokens]` extra (Meta's chat template, rendered as
    vLLM renders it, and Llama 3's tokenizer); Llama 4 models are counted with Llama 4's
    tokenizer in its chat frame. Without the extra, and for other models, each text counts
    one token per UTF-8 byte: never fewer than the exact count.

    Args:
        model: the model's API name.
        messages: OpenAI-style message dicts, as sent on the wire (an empty list counts the
            frame alone).
        tools: OpenAI-style tool definitions sent with the request, if any (an empty list
            counts as no tools: `build_payload` does not send one).
        tool_mode: `"prompt"` counts the request as prompt mode sends it (tools and calls
            rewritten into the messages); `"auto"` and `"native"` count native tools (an
            endpoint that `"auto"` has switched to prompt mode takes a few tokens more).
        any_order: count a bound instead, one that holds for these messages sent in any
            order, or any part of them: the frame once, and each message as the largest of
            the ways the template frames it where it may land (the system turn, the first
            user turn that carries the tools, a turn of its own). In the order given it is
            exact but for 5 tokens when the first message is a system message and 5 when
            tools are given (the first other message); `count(a + b)` is then at most
            `count(a) + count(b) - count([])` (equal outside prompt mode). This is what
            LangChain's `trim_messages` needs: it counts lists reversed.

    Returns:
        The number of prompt tokens.
    """
    tokenizer = tokenizer_for(model)
    # No tools and an empty list are one request: `build_payload` sends no `tools: []`.
    tool_list = list(tools) if tools else None
    if tool_mode == "prompt" and tool_list and tool_names(tool_list):
        if any_order:
            return _prompt_mode_bound(tokenizer, messages, tool_list)
        body = to_prompt_mode({"messages": list(messages), "tools": tool_list})
        messages, tool_list = body["messages"], None
    if any_order:
        return _bound(tokenizer, messages, tool_list)
    if tokenizer.family == "llama4":
        return tokenizer.count_prompt(render_llama4_prompt(messages, tool_list))
    return tokenizer.count_prompt(render_llama3_prompt(messages, tool_list))


# -- a count for any order ---------------------------------------------------------------------
#
# Every turn of the template but one begins with a header and ends with an end-of-turn token,
# and tiktoken splits the prompt at special tokens before its BPE: a turn's tokens do not
# depend on its neighbours. The exceptions are texts glued to the frame, and there the frame
# ends in a pre-token boundary: the system message after "Today Date: ...\n\n" and, with
# tools, the first other message after the last definition's "}\n\n" (both stripped, so they
# begin with no whitespace to join the newlines). So the prompt's count is the frame's count
# (rendered with those texts empty) plus each message's, and a message's count depends only
# on where it lands; taking its largest gives a sum that no order or subset exceeds.


def _bound(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: list[Mapping[str, Any]] | None,
) -> int:
    llama4 = tokenizer.family == "llama4"
    render = render_llama4_prompt if llama4 else render_llama3_prompt
    turn = _llama4_turn if llama4 else _llama3_turn
    turns = [turn(message) for message in messages]
    # Each turn is bounded by special tokens, so the frame and the turns count as one text:
    # one call to the tokenizer instead of one per message.
    total = tokenizer.count_prompt(render([], tools) + "".join(turns))
    if tools is not None and not llama4:
        empty_result = tokenizer.count_prompt(_header("ipython") + _LLAMA3_EOT)
        for message, text in zip(messages, turns, strict=True):
            # Glued to the frame (Llama 3.1 with tools: the first message after the system
            # one, whatever its role), a message is its stripped text alone: fewer tokens
            # than its own turn for a text, but not always for a tool result (not written as
            # JSON there) or a tool call (its text there, its call lost).
            if message.get("role") in ("tool", "ipython"):
                # Its turn is the empty turn's tokens and its JSON's (the header ends in
                # "\n\n", the JSON begins with a quote: no token spans them).
                own = empty_result + tokenizer.count_prompt(_json(_content(message)))
            elif message.get("tool_calls"):
                own = tokenizer.count_prompt(text)
            else:
                continue
            glued = _content(message).strip()
            if glued:
                total += max(0, tokenizer.count_prompt(glued) - own)
    return total


def _prompt_mode_bound(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: list[Mapping[str, Any]],
) -> int:
    # Prompt mode rewrites each call and result on its own, then puts the definitions in
    # front of the first user message (or in a user message of their own when there is
    # none) and adds its system message when the first is not one: counted here as the
    # largest of those, whichever message is first.
    rewritten = to_prompt_mode({"messages": list(messages)})["messages"]
    probe = to_prompt_mode({"messages": [{"role": "user", "content": ""}], "tools": tools})
    added_system, first_user = probe["messages"]
    preamble = str(first_user["content"])
    turn = _llama4_turn if tokenizer.family == "llama4" else _llama3_turn
    extra = tokenizer.count_prompt(turn({"role": "user", "content": preamble.rstrip()}))
    for message in rewritten:
        if message.get("role") == "user":
            text = _content(message)
            with_preamble = {"role": "user", "content": preamble + text}
            extra = max(
                extra,
                tokenizer.count_prompt(turn(with_preamble)) - tokenizer.count_prompt(turn(message)),
            )
    return _bound(tokenizer, rewritten, None) + tokenizer.count_prompt(turn(added_system)) + extra
