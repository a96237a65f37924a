"""Constructor arguments an adapter class has no field for: request fields, or mistakes."""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from pydantic import BaseModel

from ._chat_wire import check_single_choice

__all__ = ["KNOWN_REQUEST_FIELDS", "move_unknown_arguments"]

# Request fields vLLM takes that have no field of their own: passed on with every request (with
# a warning), never taken for a misspelling of a field (`top_k` is one letter from `top_p`).
KNOWN_REQUEST_FIELDS = frozenset(
    {
        "top_k",
        "min_p",
        "repetition_penalty",
        "length_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "user",
        "min_tokens",
        "ignore_eos",
        "stop_token_ids",
        "include_stop_str_in_output",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "truncate_prompt_tokens",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "n",
        "best_of",
        "parallel_tool_calls",
        "response_format",
        "tools",
        "tool_choice",
    }
)


def move_unknown_arguments(
    cls: type[BaseModel], values: dict[str, Any], into: str = "model_kwargs"
) -> dict[str, Any]:
    """Sort an adapter's constructor arguments as ChatOpenAI does.

    An argument that is no field (nor alias) of `cls` goes into the dict field `into`
    (`model_kwargs`, LlamaIndex's `additional_kwargs`) and is sent with every request, with a
    warning that names it, unless it looks like a misspelt field (then an error says which).
    A field given both as an argument and in `into` is an error; a field given only in
    `into` becomes the argument (the request is the same; the field is validated). `n` above
    1 is refused wherever it is given.

    Raises:
        ValueError: a likely misspelling, a field given twice, or `n` above 1.
    """
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    values = dict(values)
    extra = dict(values.get(into) or {})
    # Before any warning about `n`: it is refused, not moved.
    check_single_choice({"n": values.get("n", extra.get("n"))})
    check_single_choice(values.get("extra_body") or {})
    for key in list(values):
        if key in names:
            continue
        if key not in KNOWN_REQUEST_FIELDS:
            close = difflib.get_close_matches(key, sorted(cls.model_fields), n=1, cutoff=0.8)
            if close:
                raise ValueError(
                    f"{cls.__name__} has no argument {key!r}: did you mean {close[0]!r}? (A "
                    f"request field of that name goes in {into}={{{key!r}: ...}}.)"
                )
        if key in extra:
            raise ValueError(f"{key!r} is given twice: as an argument and in {into}")
        extra[key] = values.pop(key)
        warnings.warn(
            f"{key!r} is not an argument of {cls.__name__}: it is sent with every request as "
            f"a request field. Pass it in {into}={{{key!r}: ...}} to say so and silence "
            "this warning.",
            UserWarning,
            stacklevel=5,
        )
    for key in [k for k in extra if k in names]:
        if values.get(key) is not None:
            raise ValueError(
                f"{key!r} is given twice: as {key}={values[key]!r} and in {into} "
                f"({extra[key]!r}); give it once, as {key}=..."
            )
        values[key] = extra.pop(key)
    if into in values or extra:
        values[into] = extra
    return values
