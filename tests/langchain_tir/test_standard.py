"""LangChain's own standard suites for ChatTIRLlama.

The integration suite runs against the emulator. The emulator is not a model: its replies are
the recorded TIR reply, or what vLLM's constraints force (a forced tool call or a
`response_format` gets the plainest schema-valid JSON). The tests that need a model to read
the question (pick the argument 3 out of "magic_function(3)", decide unprompted to call a
tool, write the keys a prompt asks for) are marked xfail with that reason, strictly, so that
they are not silently skipped; the same paths are covered by scripted tests in
test_chat_models.py and against the real model in test_realmodel.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_tir import ChatTIRLlama
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator

NEEDS_A_MODEL = (
    "the emulator is not a model: its tool arguments come from the schema, not from reading "
    "the question (covered by scripted emulator tests and the real-model tests)"
)


class TestChatTIRLlamaUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTIRLlama

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"project_id": "1234"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "TIR_API_KEY": "env-key",
                "TIR_PROJECT_ID": "42",
                "TIR_HOST": "https://host.example",
            },
            {},
            {"api_key": "env-key", "project_id": "42", "host": "https://host.example"},
        )

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @pytest.mark.xfail(
        reason="langchain-core's load(allowed_objects='all') only allows the classes in its own "
        "mapping, which no partner outside langchain-core's tree is in; the dumpd snapshot "
        "still runs first, and test_chat_models.py round-trips with allowed_objects=[...]",
        strict=True,
        raises=ValueError,
    )
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)


class ChatCapabilities:
    """What ChatTIRLlama can do, for LangChain's integration suite (here and on vLLM)."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTIRLlama

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False  # Llama 3.1 8B Instruct is text-only


class TestChatTIRLlamaIntegration(ChatCapabilities, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _aim_at_emulator(self, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
        # The suite builds models from chat_model_params alone; the environment carries the
        # emulator's address, as it would carry TIR's.
        monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
        monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
        monkeypatch.setenv("TIR_PROJECT_ID", "1234")

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"timeout": 10}

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "llama3_1_70b_instruct"

    @pytest.mark.xfail(reason=NEEDS_A_MODEL, strict=True, raises=AssertionError)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=NEEDS_A_MODEL, strict=True, raises=AssertionError)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(
        reason="the emulator is not a model: it does not decide on its own to call a tool "
        "(the agent loop is covered by scripted emulator tests)",
        strict=True,
        raises=AssertionError,
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=NEEDS_A_MODEL, strict=True, raises=AssertionError)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )

    @pytest.mark.xfail(
        reason="the emulator is not a model: in json_object mode it cannot know which keys "
        "the prompt asks for (json_mode is covered by scripted emulator tests)",
        strict=True,
        raises=OutputParserException,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
