"""Meta's own tokenizers, offline: what the server counts a text as.

With the `[tokens]` extra, Meta's `llama-models` wheel supplies the tokenizer files
(`llama_models/llama3/tokenizer.model`, `llama_models/llama4/tokenizer.model`: tiktoken's BPE
format) and tiktoken reads them. Only the files are read: nothing of `llama_models` is imported,
so its own dependencies are never loaded here. Without the extra, or for a model with no known
tokenizer, counts are approximate, with one warning per process that says so. Llama's chat
frame and the prompt counts are in `prompt`.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._models.known import TokenizerFamily, tokenizer_family

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "TOKENS_EXTRA_HINT",
    "ApproximateTokenCountWarning",
    "Tokenizer",
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
