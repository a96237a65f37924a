"""Constructor arguments the class has no field for, and request fields it refuses."""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from pydantic import BaseModel

from tir_transport import check_single_choice

# Request fields vLLM takes that have no field of their own: passed on via `model_kwargs` (with
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


def move_unknown_to_model_kwargs(cls: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Sort a model's constructor arguments as ChatOpenAI does.

    An argument that is no field (nor alias) of `cls` goes into `model_kwargs`, with a
    warning that names it, unless it looks like a misspelt field (then an error says which).
    A field given both as an argument and in `model_kwargs` is an error; a field given only
    in `model_kwargs` becomes the argument (the request is the same; the field is validated).

    Raises:
        ValueError: a likely misspelling, or a field given twice.
    """
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    values = dict(values)
    extra = dict(values.get("model_kwargs") or {})
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
                    f"request field of that name goes in model_kwargs={{{key!r}: ...}}.)"
                )
        if key in extra:
            raise ValueError(f"{key!r} is given twice: as an argument and in model_kwargs")
        extra[key] = values.pop(key)
        warnings.warn(
            f"{key!r} is not an argument of {cls.__name__}: it is sent with every request as "
            f"a request field. Pass it in model_kwargs={{{key!r}: ...}} to say so and silence "
            "this warning.",
            UserWarning,
            stacklevel=5,
        )
    for key in [k for k in extra if k in names]:
        if values.get(key) is not None:
            raise ValueError(
                f"{key!r} is given twice: as {key}={values[key]!r} and in model_kwargs "
                f"({extra[key]!r}); give it once, as {key}=..."
            )
        values[key] = extra.pop(key)
    if "model_kwargs" in values or extra:
        values["model_kwargs"] = extra
    return values
