"""Configuration: parameters, environment fallbacks, and the request URL."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import SecretStr

from ._errors import ConfigurationError

__all__ = [
    "API_KEY_ENV_VARS",
    "BASE_URL_ENV_VARS",
    "CONFIG_FIELDS",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "HOST_ENV_VARS",
    "PROJECT_ID_ENV_VARS",
    "TIRConfig",
    "env_first",
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


# The fields every adapter carries under these names and hands to TIRConfig as they are.
CONFIG_FIELDS = (
    "api_key",
    "project_id",
    "model",
    "host",
    "endpoint_id",
    "base_url",
    "timeout",
    "max_retries",
    "allow_insecure_http",
)


def env_first(names: tuple[str, ...], env: Mapping[str, str] | None = None) -> str | None:
    """Return the first non-empty value among the environment variables `names`."""
    source = os.environ if env is None else env
    for name in names:
        value = source.get(name, "").strip()
        if value:
            return value
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _strip_project_prefix(project_id: str) -> str:
    project_id = project_id.strip()
    return project_id[2:] if project_id.lower().startswith("p-") else project_id


@dataclass(frozen=True, slots=True)
class TIRConfig:
    """Everything needed to reach one TIR chat model; construction does no I/O."""

    api_key: SecretStr | None = field(default=None, repr=False)
    project_id: str | None = None
    model: str = DEFAULT_MODEL
    host: str = DEFAULT_HOST
    endpoint_id: str | None = None
    base_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    allow_insecure_http: bool = False
    default_headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            # Accept a plain string too, but never keep the key where repr() would show it.
            object.__setattr__(self, "api_key", SecretStr(self.api_key) if self.api_key else None)
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"timeout must be positive, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {self.max_retries!r}")
        if self.project_id is not None:
            object.__setattr__(self, "project_id", _strip_project_prefix(self.project_id))
        if self.endpoint_id is not None:
            endpoint = self.endpoint_id.strip()
            if endpoint.lower().startswith("is-"):
                endpoint = endpoint[3:]
            object.__setattr__(self, "endpoint_id", endpoint)

    @classmethod
    def from_env(
        cls,
        *,
        api_key: str | SecretStr | None = None,
        project_id: str | None = None,
        model: str | None = None,
        host: str | None = None,
        endpoint_id: str | None = None,
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
        if isinstance(api_key, str):
            api_key = SecretStr(api_key) if api_key else None
        if api_key is None:
            found = env_first(API_KEY_ENV_VARS, env)
            api_key = SecretStr(found) if found else None
        return cls(
            api_key=api_key,
            project_id=project_id or env_first(PROJECT_ID_ENV_VARS, env),
            model=model or DEFAULT_MODEL,
            host=host or env_first(HOST_ENV_VARS, env) or DEFAULT_HOST,
            endpoint_id=endpoint_id or None,
            base_url=base_url or env_first(BASE_URL_ENV_VARS, env),
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

    def chat_url(self, model: str | None = None) -> str:
        """The URL a chat request goes to.

        Args:
            model: a per-request model name; for a GenAI model it is part of the path.

        Raises:
            ConfigurationError: no project and no `base_url`, or plain `http://` to a host
                that is not loopback without `allow_insecure_http=True`.
        """
        project = self.project_id
        query = f"?project_id={quote(project, safe='')}" if project else ""
        if self.base_url:
            url = f"{self.base_url.rstrip('/')}/chat/completions{query}"
        else:
            if not project:
                raise ConfigurationError(
                    "No TIR project id: set the TIR_PROJECT_ID environment variable (or pass "
                    "project_id=...), or give a full base_url (TIR_BASE_URL)."
                )
            host = self.host.rstrip("/")
            p = quote(project, safe="")
            if self.endpoint_id:
                path = f"/project/p-{p}/endpoint/is-{quote(self.endpoint_id, safe='')}/v1"
            else:
                path = f"/project/p-{p}/genai/{quote(model or self.model, safe='')}/v1"
            url = f"{host}{path}/chat/completions{query}"
        self._check_url(url)
        return url

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
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ConfigurationError(
                "No TIR API key: set the TIR_API_KEY environment variable (or pass api_key=...). "
                "Create a token under API Tokens in the TIR dashboard."
            )
        return self.api_key.get_secret_value()

    def headers(self) -> dict[str, str]:
        """Request headers, with `Authorization: Bearer ...`."""
        return {
            **self.default_headers,
            "Authorization": f"Bearer {self.secret()}",
            "Accept": "application/json",
        }
