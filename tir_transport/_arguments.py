"""Constructor arguments that are no field: the peers' names, request fields, mistakes.

Users come with the arguments of `ChatOpenAI`, `OpenAIEmbeddings` (LangChain) and `OpenAILike`,
`OpenAILikeEmbedding` (LlamaIndex). Those that mean something here are fields or aliases of
the connection model and the adapter classes (`openai_api_key`, `api_base`, ...); those that
mean nothing here are refused by `PEER_NAMES` with a message that says what to do instead.
Nothing that looks like a secret ever becomes a request field (`refuse_secrets`).
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from pydantic import AliasChoices, BaseModel

from ._chat.wire import check_single_choice
from ._peer_names import PEER_NAMES
from ._secrets import looks_secret, refuse_secrets

__all__ = [
    "KNOWN_REQUEST_FIELDS",
    "argument_names",
    "move_unknown_arguments",
]

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


def argument_names(cls: type[BaseModel]) -> dict[str, str]:
    """Every name `cls`'s constructor takes (fields, aliases, alias choices) -> the field."""
    names: dict[str, str] = {}
    for field, info in cls.model_fields.items():
        names[field] = field
        if info.alias:
            names[info.alias] = field
        if isinstance(info.validation_alias, AliasChoices):
            for choice in info.validation_alias.choices:
                if isinstance(choice, str):
                    names[choice] = field
        elif isinstance(info.validation_alias, str):
            names[info.validation_alias] = field
    return names


def _refuse_peer_name(cls: type[BaseModel], key: str, value: Any) -> bool:
    """True for a peer's name given a value we match (drop it); raise for any other value."""
    peer = PEER_NAMES.get(key)
    if peer is None:
        return False
    if peer.accepts(value):
        return True
    raise ValueError(
        f"{cls.__name__} does not take {key!r} ({peer.peers} argument): {peer.instead}."
    )


def _take_project_from_query(values: dict[str, Any], names: dict[str, str]) -> None:
    """ChatOpenAI's way to TIR, `default_query={"project_id": ...}`, read as `project_id`.

    Only that one parameter: any other is refused by `PEER_NAMES` as before.
    """
    query = values.get("default_query")
    if "project_id" not in names or not isinstance(query, dict) or set(query) != {"project_id"}:
        return
    project = query["project_id"]
    given = values.get("project_id")
    if given not in (None, "") and str(given).removeprefix("p-") != str(project).removeprefix("p-"):
        raise ValueError(
            f"project_id is given twice, as {given!r} and in default_query as {project!r}: "
            "give it once (project_id=...; the query is added for you)"
        )
    del values["default_query"]
    values["project_id"] = project


def move_unknown_arguments(
    cls: type[BaseModel], values: dict[str, Any], into: str | None = "model_kwargs"
) -> dict[str, Any]:
    """Sort an adapter's constructor arguments as ChatOpenAI does, and refuse the rest.

    A name given twice (a field and its alias: `api_key` and `openai_api_key`) is an error.
    A peer's argument that means nothing here (`PEER_NAMES`) is refused with what to do
    instead, or dropped when its value asks for what happens anyway (`is_chat_model=True`).
    An argument named like a secret is refused (naming it, never its value). Any other
    argument that is no field (nor alias) of `cls` goes into the dict field `into`
    (`model_kwargs`, LlamaIndex's `additional_kwargs`) and is sent with every request, with
    a warning that names it, unless it looks like a misspelt field (then an error says
    which); with `into=None` (a class with no request fields of its own) it is an error. A
    field given both as an argument and in `into` is an error; a field given only in `into`
    becomes the argument (the request is the same; the field is validated). `n` above 1 is
    refused wherever it is given; so is a secret-named field in `into` or `extra_body`.

    Raises:
        ValueError: any of the errors above.
    """
    names = argument_names(cls)
    values = dict(values)
    given: dict[str, list[str]] = {}
    for key in values:
        if key in names:
            given.setdefault(names[key], []).append(key)
    for field, keys in given.items():
        if len(keys) > 1:
            raise ValueError(
                f"{field!r} is given twice, as {keys[0]!r} and as {keys[1]!r}: give it once"
            )
    extra = dict(values.get(into) or {}) if into else {}
    # Before any warning about `n`: it is refused, not moved.
    check_single_choice({"n": values.get("n", extra.get("n"))})
    check_single_choice(values.get("extra_body") or {})
    if into:
        refuse_secrets(extra, where=f"{into} field")
    refuse_secrets(values.get("extra_body") or {}, where="extra_body field")
    _take_project_from_query(values, names)
    for key in list(values):
        if key in names:
            continue
        if _refuse_peer_name(cls, key, values[key]):
            del values[key]
            continue
        if key not in KNOWN_REQUEST_FIELDS:
            close = difflib.get_close_matches(key, sorted(cls.model_fields), n=1, cutoff=0.8)
            if close:
                where = f" (A request field of that name goes in {into}={{{key!r}: ...}}.)"
                raise ValueError(
                    f"{cls.__name__} has no argument {key!r}: did you mean {close[0]!r}?"
                    + (where if into else "")
                )
        if looks_secret(key):
            raise ValueError(
                f"{cls.__name__} has no argument {key!r}, which looks like a secret: refused, "
                "so that it is never sent as a request field. The TIR key is api_key=... (or "
                "TIR_API_KEY)."
            )
        if not into:
            raise ValueError(f"{cls.__name__} has no argument {key!r}")
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
        field = names[key]
        if values.get(field) is not None or values.get(key) is not None:
            raise ValueError(
                f"{key!r} is given twice: as an argument and in {into}; give it once, as {key}=..."
            )
        values[key] = extra.pop(key)
    if into and (into in values or extra):
        values[into] = extra
    return values
