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
import math
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._models import TokenizerFamily, tokenizer_family
from ._tools import ToolMode, message_text, to_prompt_mode, tool_names

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

# -- the approximation -------------------------------------------------------------------------

# Words, runs of whitespace, runs of other characters: Python's own `re` (no extra needed).
_APPROX_PIECES = re.compile(r"\w+|\s+|[^\w\s]+")


def _approximate_count(text: str) -> int:
    # Calibrated on Llama 3's tokenizer so as to err on the high side, which keeps trimming
    # inside the window: an ASCII word is about one token per 5 letters; other scripts take
    # more (Tamil about 1.4 tokens a letter, Hindi 0.5), so one per 2 bytes of UTF-8; a run
    # of punctuation one per 2 characters; whitespace is free unless it holds a line break
    # or is longer than the one space a word carries with it.
    count = 0
    for piece in _APPROX_PIECES.findall(text):
        first = piece[0]
        if first.isspace():
            count += 1 if ("\n" in piece or "\r" in piece or len(piece) > 1) else 0
        elif first.isalnum() or first == "_":
            if piece.isascii():
                count += math.ceil(len(piece) / 5)
            else:
                count += math.ceil(len(piece.encode()) / 2)
        else:
            count += math.ceil(len(piece.encode()) / 2)
    return count


# -- tokenizers --------------------------------------------------------------------------------


class Tokenizer:
    """A model family's tokenizer: exact (Meta's BPE file through tiktoken) or approximate.

    Callable as `tokenizer(text) -> list[int]`, which is what LlamaIndex's `Settings.tokenizer`
    and `TokenCountingHandler(tokenizer=...)` take. Get one with `tokenizer_for(model)`; they are
    shared, loaded once per process, and safe to use from several threads.
    """

    __slots__ = ("_encoding", "family")

    def __init__(self, family: str, encoding: tiktoken.Encoding | None) -> None:
        self.family = family
        self._encoding = encoding

    @property
    def exact(self) -> bool:
        """Whether counts are the model's own (False: approximate, the extra is missing)."""
        return self._encoding is not None

    def encode(self, text: str) -> list[int]:
        """The token ids of plain text; look-alikes of special tokens (`<|eot_id|>`) are text.

        Without the tokenizer, the ids are placeholders (zeros): only their number means
        something.
        """
        if self._encoding is None:
            return [0] * _approximate_count(text)
        return self._encoding.encode_ordinary(text)

    __call__ = encode

    def count(self, text: str) -> int:
        """How many tokens plain text takes."""
        if self._encoding is None:
            return _approximate_count(text)
        return len(self._encoding.encode_ordinary(text))

    def count_prompt(self, prompt: str) -> int:
        """How many tokens a rendered prompt takes, special tokens read as special.

        This is what vLLM does with the text its chat template produces: its tokenizer finds
        `<|eot_id|>` (and the like) anywhere in the text, message contents included.
        """
        if self._encoding is None:
            return _approximate_count(prompt)
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
            "Token counts are approximate: the Llama tokenizer is not installed. For exact "
            f"counts, offline: {TOKENS_EXTRA_HINT}",
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
            f"Token counts for {model!r} are approximate: its tokenizer is not known "
            "(exact counts cover Llama 3.x and Llama 4 models).",
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
    for message in rest:
        role = str(message.get("role"))
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            # The template takes one call per turn (more: vLLM answers 400); several are
            # counted as one turn each, which is how a history can carry them.
            for call in calls:
                function = call.get("function") or {}
                parts.append(
                    _header("assistant")
                    + '{"name": "'
                    + str(function.get("name", ""))
                    + '", "parameters": '
                    + _json(_arguments(function.get("arguments")))
                    + "}"
                    + _LLAMA3_EOT
                )
        elif role in ("tool", "ipython"):
            # A string is "iterable" to Jinja, so the template writes tool results as JSON.
            parts.append(_header("ipython") + _json(_content(message)) + _LLAMA3_EOT)
        else:
            parts.append(_header(role) + _content(message).strip() + _LLAMA3_EOT)
    if add_generation_prompt:
        parts.append(_header("assistant"))
    return "".join(parts)


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
    for message in rest:
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
        parts.append(f"<|header_start|>{role}<|header_end|>\n\n{text}<|eot|>")
    parts.append("<|header_start|>assistant<|header_end|>\n\n")
    return "".join(parts)


def count_message_tokens(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_mode: ToolMode = "native",
) -> int:
    """The prompt tokens a chat request takes: what vLLM reports as `prompt_tokens`.

    Exact for Llama 3.x models with the `[tokens]` extra (Meta's chat template, rendered as
    vLLM renders it, and Llama 3's tokenizer); Llama 4 models are counted with Llama 4's
    tokenizer in its chat frame; other models approximately.

    Args:
        model: the model's API name.
        messages: OpenAI-style message dicts, as sent on the wire (an empty list counts the
            frame alone).
        tools: OpenAI-style tool definitions sent with the request, if any.
        tool_mode: `"prompt"` counts the request as prompt mode sends it (tools and calls
            rewritten into the messages); `"auto"` and `"native"` count native tools (an
            endpoint that `"auto"` has switched to prompt mode takes a few tokens more).

    Returns:
        The number of prompt tokens.
    """
    if tool_mode == "prompt" and tools and tool_names(tools):
        body = to_prompt_mode({"messages": list(messages), "tools": list(tools)})
        messages, tools = body["messages"], None
    tokenizer = tokenizer_for(model)
    # As vLLM: an empty list is still "tools given" to the template (None is not).
    tool_list = None if tools is None else list(tools)
    if tokenizer.family == "llama4":
        return tokenizer.count_prompt(render_llama4_prompt(messages, tool_list))
    return tokenizer.count_prompt(render_llama3_prompt(messages, tool_list))
