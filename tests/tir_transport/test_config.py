from __future__ import annotations

import pickle

import pytest

from tir_transport import DEFAULT_HOST, DEFAULT_MODEL, ConfigurationError, TIRConfig

KEY = "sk-config-test-key"


def test_defaults() -> None:
    config = TIRConfig.from_env(env={})
    assert config.model == DEFAULT_MODEL == "llama3_1_8b_instruct"
    assert config.host == DEFAULT_HOST == "https://infer.e2enetworks.net"
    assert config.timeout == 60.0
    assert config.max_retries == 2
    assert config.api_key is None


def test_genai_model_url() -> None:
    config = TIRConfig.from_env(project_id="1234", env={})
    assert config.chat_url() == (
        "https://infer.e2enetworks.net/project/p-1234/genai/llama3_1_8b_instruct/v1/"
        "chat/completions?project_id=1234"
    )


def test_model_endpoint_url() -> None:
    config = TIRConfig.from_env(project_id="1234", endpoint_id="5678", env={})
    assert config.chat_url() == (
        "https://infer.e2enetworks.net/project/p-1234/endpoint/is-5678/v1/"
        "chat/completions?project_id=1234"
    )


def test_base_url_overrides_host_project_and_model_path() -> None:
    config = TIRConfig.from_env(base_url="https://example.com/custom/v1/", env={})
    assert config.chat_url() == "https://example.com/custom/v1/chat/completions"
    with_project = config.replace(project_id="99")
    assert with_project.chat_url() == (
        "https://example.com/custom/v1/chat/completions?project_id=99"
    )


@pytest.mark.parametrize("given", ["p-1234", "P-1234", " 1234 "])
def test_p_prefix_is_accepted_and_not_doubled(given: str) -> None:
    config = TIRConfig.from_env(project_id=given, env={})
    assert config.project_id == "1234"
    assert "/project/p-1234/" in config.chat_url()
    assert "p-p-" not in config.chat_url()


def test_custom_host_and_model() -> None:
    config = TIRConfig.from_env(project_id="1", host="https://h.example/", model="mistral_7b")
    assert config.chat_url().startswith("https://h.example/project/p-1/genai/mistral_7b/v1/")
    # A per-request model (LangChain's `invoke(..., model=...)`) changes the GenAI path.
    assert "/genai/llama3_1_70b/v1/" in config.chat_url("llama3_1_70b")
    endpoint = config.replace(endpoint_id="9")
    assert endpoint.chat_url("other") == endpoint.chat_url()


def test_environment_fallbacks_first_found_wins() -> None:
    env = {
        "TIR_API_KEY": "from-tir",
        "E2E_TIR_ACCESS_TOKEN": "from-sdk",
        "TIR_PROJECT_ID": "11",
        "E2E_TIR_PROJECT_ID": "22",
        "TIR_HOST": "https://host.example",
    }
    config = TIRConfig.from_env(env=env)
    assert config.secret() == "from-tir"
    assert config.project_id == "11"
    assert config.host == "https://host.example"


def test_official_sdk_variable_names() -> None:
    config = TIRConfig.from_env(env={"E2E_TIR_ACCESS_TOKEN": "sdk-key", "E2E_TIR_PROJECT_ID": "7"})
    assert config.secret() == "sdk-key"
    assert config.project_id == "7"


def test_base_url_from_environment() -> None:
    config = TIRConfig.from_env(env={"TIR_BASE_URL": "https://b.example/v1"})
    assert config.chat_url() == "https://b.example/v1/chat/completions"


def test_real_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", "env-key")
    monkeypatch.setenv("TIR_PROJECT_ID", "p-55")
    config = TIRConfig.from_env()
    assert config.secret() == "env-key"
    assert config.project_id == "55"


def test_explicit_arguments_beat_the_environment() -> None:
    env = {"TIR_API_KEY": "env", "TIR_PROJECT_ID": "1", "TIR_HOST": "https://env.example"}
    config = TIRConfig.from_env(api_key="arg", project_id="2", host="https://arg.example", env=env)
    assert config.secret() == "arg"
    assert config.project_id == "2"
    assert config.host == "https://arg.example"


def test_missing_key_names_the_variable() -> None:
    config = TIRConfig.from_env(project_id="1", env={})
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        config.headers()


def test_missing_project_names_the_variable() -> None:
    config = TIRConfig.from_env(api_key=KEY, env={})
    with pytest.raises(ConfigurationError, match="TIR_PROJECT_ID"):
        config.chat_url()


def test_bearer_header() -> None:
    headers = TIRConfig.from_env(api_key=KEY, env={}).headers()
    assert headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "url", ["http://infer.e2enetworks.net/v1", "http://10.0.0.5:8000/v1", "http://example.com/v1"]
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    config = TIRConfig.from_env(base_url=url, env={})
    with pytest.raises(ConfigurationError, match="clear text") as info:
        config.chat_url()
    assert "allow_insecure_http" in str(info.value)
    assert config.replace(allow_insecure_http=True).chat_url().startswith(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://localhost:8000/v1",
        "http://[::1]:8000/v1",
        "http://127.5.6.7/v1",
    ],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert TIRConfig.from_env(base_url=url, env={}).chat_url().startswith(url)


def test_not_a_url() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        TIRConfig.from_env(base_url="infer.e2enetworks.net/v1", env={}).chat_url()


def test_repr_never_shows_the_key() -> None:
    config = TIRConfig.from_env(api_key=KEY, project_id="1", env={})
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert "**********" in repr(config)


def test_config_pickles() -> None:
    config = TIRConfig.from_env(api_key=KEY, project_id="1", env={})
    assert pickle.loads(pickle.dumps(config)).secret() == KEY


@pytest.mark.parametrize(("field", "value"), [("timeout", 0), ("max_retries", -1)])
def test_invalid_numbers(field: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=field):
        TIRConfig.from_env(env={}, **{field: value})  # type: ignore[arg-type]


def test_a_plain_string_key_is_kept_secret() -> None:
    config = TIRConfig(api_key=KEY, project_id="1")  # type: ignore[arg-type]
    assert config.secret() == KEY
    assert KEY not in repr(config)
    assert TIRConfig(api_key="").api_key is None  # type: ignore[arg-type]
