"""What every command shares: exit statuses, the connection its flags give, one-line errors."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from tir_transport import DEFAULT_MODEL, ConfigurationError, TIRConfig, TIRConnection

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The connection settings given as flags (the rest comes from the environment)."""
    given = {
        "project_id": args.project_id,
        "host": args.host,
        "endpoint_id": args.endpoint_id,
        "base_url": args.base_url,
        "timeout": args.timeout,
        "allow_insecure_http": args.allow_insecure_http or None,
    }
    return {name: value for name, value in given.items() if value is not None}


def _config(args: argparse.Namespace, model: str | None = None) -> TIRConfig:
    try:
        connection = TIRConnection(**_connection(args))
    except ValidationError as e:  # a bad flag value, a key pasted with quotes...
        raise ConfigurationError(_settings_refused(e)) from None
    return connection.tir_config(model or args.model or DEFAULT_MODEL)


def _settings_refused(error: ValidationError) -> str:
    """A settings refusal in a person's words: the flag, what is wrong; not pydantic's frame."""
    said = []
    for detail in error.errors():
        message = detail["msg"].removeprefix("Value error, ")
        field = ".".join(str(part) for part in detail["loc"])
        said.append(f"--{field.replace('_', '-')}: {message}" if field else message)
    return "; ".join(said)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
