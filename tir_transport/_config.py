"""Configuration: parameters, environment fallbacks, and the request URL."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from ._api_key import clean_api_key
from ._errors import ConfigurationError

__all__ = [
    "API_KEY_ENV_VARS",
    "BASE_URL_ENV_VARS",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "EMBEDDING_MODEL_ENV_VARS",
    "EMBEDDING_MODEL_HINT",
    "HOST_ENV_VARS",
    "PROJECT_ID_ENV_VARS",
    "RERANK_MODEL_ENV_VARS",
    "RERANK_MODEL_HINT",
    "TIRConfig",
    "coerce_id",
    "env_api_key",
    "env_first",
    "from_environment",
    "id_text",
]

DEFAULT_MODEL = "llama3_1_8b_instruct"
DEFAULT_HOST = "https://infer.e2enetworks.net"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2

# First found wins; the E2E_* names are the official TIR SDK's.
API_KEY_ENV_VARS = ("TIR_API_KEY", "E2E_TIR_ACCESS_TOKEN")
PROJECT_ID_ENV_VARS = ("TIR_PROJECT_ID", "E2E_TIR_PROJECT_ID")
HOST_ENV_VARS = ("TIR_HOST",)
BASE_URL_ENV_VARS = ("TIR_BASE_URL",)
EMBEDDING_MODEL_ENV_VARS = ("TIR_EMBEDDING_MODEL",)
EMBEDDING_MODEL_HINT = (
    "an embedding model: pass model=... or set TIR_EMBEDDING_MODEL (the model's API name on "
    "its page in TIR; TIR has no default embedding model)"
)
RERANK_MODEL_ENV_VARS = ("TIR_RERANK_MODEL",)
RERANK_MODEL_HINT = (
    "a rerank model: pass model=... or set TIR_RERANK_MODEL (the model's API name on its page "
    "in TIR, under Rerank; TIR has no default rerank model)"
)


def env_first(names: tuple[str, ...], env: Mapping[str, str] | None = None) -> str | None:
    """Return the first non-empty value among the environment variables `names`."""
    source = os.environ if env is None else env
    for name in names:
        value = source.get(name, "").strip()
        if value:
            return value
    return None


def env_api_key(env: Mapping[str, str] | None = None) -> SecretStr | None:
    """The API key from the first of `API_KEY_ENV_VARS` that is set (cleaned as arguments are).

    Raises:
        ConfigurationError: the variable's key holds a character no key can hold.
    """
    source = os.environ if env is None else env
    for name in API_KEY_ENV_VARS:
        key = clean_api_key(source.get(name), name)
        if key is not None:
            return key
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def id_text(value: object, name: str) -> str | None:
    """An id given as an int or a str, as a str (the adapters' `project_id` validator).

    Raises:
        ConfigurationError: anything but None, an int or a str (a bool or a float included);
            the message names the parameter.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ConfigurationError(
        f"{name} must be an int or a str (e.g. 4242 or '4242'), "
        f"got {type(value).__name__} {value!r}"
    )


def coerce_id(value: object, name: str, prefix: str) -> str | None:
    """An id as TIR's URLs take it: an int or a str, with or without its prefix (`p-`, `is-`).

    TIR's API reference types ids as integers, so users pass 4242 as often as "4242".

    Raises:
        ConfigurationError: anything but an int or a str (a bool or a float included).
    """
    text = id_text(value, name)
    if text is None:
        return None
    text = text.strip()
    if text.lower().startswith(prefix):
        text = text[len(prefix) :]
    return text or None


def from_environment(
    *,
    api_key: str | SecretStr | None,
    project_id: str | int | None,
    host: str | None,
    base_url: str | None,
    env: Mapping[str, str] | None = None,
) -> tuple[SecretStr | None, str | int | None, str, str | None]:
    """The connection settings resolved: given, else from the environment, else the default.

    The one way both `TIRConfig.from_env` and the adapters' `TIRConnection` resolve them:
    what was given wins, then the environment's variables (first found), then the defaults.
    A host given is a choice of URL too: `TIR_BASE_URL` is then not read (it would override
    the host given, and send to another server without a word).

    Returns:
        `(api_key, project_id, host, base_url)`; the key cleaned (see `clean_api_key`).

    Raises:
        ConfigurationError: a key (given or from the environment) no key can be.
    """
    return (
        clean_api_key(api_key) or env_api_key(env),
        project_id if project_id not in (None, "") else env_first(PROJECT_ID_ENV_VARS, env),
        host or env_first(HOST_ENV_VARS, env) or DEFAULT_HOST,
        base_url or (None if host else env_first(BASE_URL_ENV_VARS, env)),
    )


_PROJECT_IN_PATH = re.compile(r"/project/p-([^/?#]+)/")


def _project_in(base_url: str | None) -> str | None:
    """The project a TIR base URL's path names (`/project/p-123/`), if it names one."""
    found = _PROJECT_IN_PATH.search(base_url or "")
    return unquote(found.group(1)) if found else None


@dataclass(frozen=True, slots=True)
class TIRConfig:
    """Everything needed to reach one TIR model (chat, embeddings, rerank); builds with no I/O."""

    api_key: SecretStr | None = field(default=None, repr=False)
    project_id: str | int | None = None
    model: str = DEFAULT_MODEL
    host: str = DEFAULT_HOST
    endpoint_id: str | int | None = None
    base_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    allow_insecure_http: bool = False
    default_headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A plain string too, but never kept where repr() would show it; stripped, checked.
        object.__setattr__(self, "api_key", clean_api_key(self.api_key))
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"timeout must be positive, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {self.max_retries!r}")
        # Stored as str: after this, project_id and endpoint_id are str | None.
        object.__setattr__(self, "project_id", coerce_id(self.project_id, "project_id", "p-"))
        object.__setattr__(self, "endpoint_id", coerce_id(self.endpoint_id, "endpoint_id", "is-"))

    @classmethod
    def from_env(
        cls,
        *,
        api_key: str | SecretStr | None = None,
        project_id: str | int | None = None,
        model: str | None = None,
        host: str | None = None,
        endpoint_id: str | int | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        allow_insecure_http: bool = False,
        default_headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> TIRConfig:
        """Build a configuration from arguments, falling back to the environment.

        Arguments given explicitly win; then the variables of the configuration table
        (`TIR_API_KEY`, `E2E_TIR_ACCESS_TOKEN`, `TIR_PROJECT_ID`, `E2E_TIR_PROJECT_ID`,
        `TIR_HOST`, `TIR_BASE_URL`), first found; then the defaults. Missing key or project
        are not errors here: the first request reports them.
        """
        api_key, project_id, host, base_url = from_environment(
            api_key=api_key, project_id=project_id, host=host, base_url=base_url, env=env
        )
        return cls(
            api_key=api_key,
            project_id=project_id,
            model=model or DEFAULT_MODEL,
            host=host,
            endpoint_id=endpoint_id if endpoint_id not in (None, "") else None,
            base_url=base_url,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            allow_insecure_http=allow_insecure_http,
            default_headers=dict(default_headers or {}),
        )

    def replace(self, **changes: Any) -> TIRConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else "SecretStr('**********')"
        return (
            f"TIRConfig(api_key={key}, project_id={self.project_id!r}, model={self.model!r}, "
            f"host={self.host!r}, endpoint_id={self.endpoint_id!r}, base_url={self.base_url!r}, "
            f"timeout={self.timeout!r}, max_retries={self.max_retries!r})"
        )

    def missing(self, *, model_hint: str | None = None) -> list[str]:
        """Each setting a request needs and does not have, said with how to give it.

        Args:
            model_hint: how to give a missing model (embeddings name `TIR_EMBEDDING_MODEL`,
                rerank `TIR_RERANK_MODEL`).
        """
        missing = []
        if self.api_key is None or not self.api_key.get_secret_value():
            # A program moved from ChatOpenAI may still have its variable set: not read on
            # purpose (an OpenAI key sent to TIR is a key sent to the wrong service).
            openai = (
                " (OPENAI_API_KEY is not read on purpose: the TIR key goes in TIR_API_KEY)"
                if os.environ.get("OPENAI_API_KEY")
                else ""
            )
            missing.append(
                "an API key: set TIR_API_KEY (or pass api_key=...); create a token under "
                f"API Tokens in the TIR dashboard{openai}"
            )
        if not self.project_id and not self.base_url:
            missing.append(
                "a project id: set TIR_PROJECT_ID (or pass project_id=...), or give a full "
                "base_url (TIR_BASE_URL) instead"
            )
        if not self.model:
            missing.append(model_hint or "a model: pass model=... (the model's API name in TIR)")
        return missing

    def require(self, *, model_hint: str | None = None) -> None:
        """Check that a request can be made, naming every missing setting at once.

        Raises:
            ConfigurationError: something a request needs is missing.
        """
        missing = self.missing(model_hint=model_hint)
        if missing:
            raise ConfigurationError(
                "TIR is not fully configured. Missing " + "; and ".join(missing) + "."
            )

    def url(self, api: str, model: str | None = None) -> str:
        """The URL of one API (`"chat/completions"`, `"embeddings"`, `"rerank"`) of the model.

        Args:
            api: the path after `/v1/`.
            model: a per-request model name; for a GenAI model it is part of the path.

        Raises:
            ConfigurationError: no project and no `base_url` (every missing setting is
                named), or plain `http://` to a host that is not loopback without
                `allow_insecure_http=True`.
        """
        # A TIR base URL names its project in its path (`.../project/p-123/genai/...`): the
        # query the service wants then says it too, as it does for a host and a project.
        project = self.project_id or _project_in(self.base_url)
        query = f"?project_id={quote(str(project), safe='')}" if project else ""
        if self.base_url:
            url = f"{self.base_url.rstrip('/')}/{api}{query}"
        else:
            if not project:
                self.require()
            host = self.host.rstrip("/")
            p = quote(str(project), safe="")
            if self.endpoint_id:
                path = f"/project/p-{p}/endpoint/is-{quote(str(self.endpoint_id), safe='')}/v1"
            else:
                path = f"/project/p-{p}/genai/{quote(model or self.model, safe='')}/v1"
            url = f"{host}{path}/{api}{query}"
        self._check_url(url)
        return url

    def chat_url(self, model: str | None = None) -> str:
        """The URL a chat request goes to (see `url`)."""
        return self.url("chat/completions", model)

    def embeddings_url(self, model: str | None = None) -> str:
        """The URL an embeddings request goes to (see `url`)."""
        return self.url("embeddings", model)

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"Not an http(s) URL: {url!r}. Give host or base_url as e.g. "
                "'https://infer.e2enetworks.net'."
            )
        if (
            parts.scheme == "http"
            and not self.allow_insecure_http
            and not _is_loopback(parts.hostname)
        ):
            raise ConfigurationError(
                f"Refusing plain http:// to {parts.hostname}: the API key would travel in clear "
                "text. Use https://, or pass allow_insecure_http=True if you really mean it."
            )

    def secret(self) -> str:
        """The API key in clear, for the Authorization header only.

        Raises:
            ConfigurationError: no key was given and none is in the environment.
        """
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if not key:
            self.require()  # raises, naming the key and anything else missing
        return key

    def headers(self) -> dict[str, str]:
        """Request headers, with `Authorization: Bearer ...`."""
        return {
            **self.default_headers,
            "Authorization": f"Bearer {self.secret()}",
            "Accept": "application/json",
        }
