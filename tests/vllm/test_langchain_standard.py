"""LangChain's standard chat integration suite for ChatTIRLlama, on a real vLLM.

The model is SmolLM2-135M: it proves the wiring, not the answers. vLLM's guided decoding makes
forced calls and `response_format` replies follow their schemas, so most of the suite passes
as it would against TIR. Tests that need a model to understand the question (pick 3 out of
"magic_function(3)", decide unprompted to call a tool) are strict xfails saying so.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.langchain_tir.test_standard import ChatCapabilities
from tests.vllm.conftest import Engine

pytestmark = pytest.mark.vllm


class TestChatTIRLlamaOnVLLM(ChatCapabilities, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _aim_at_vllm(self, vllm_chat: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        # The suite builds models from chat_model_params alone; the environment carries the
        # server's address, as it would carry TIR's.
        monkeypatch.setenv("TIR_BASE_URL", vllm_chat.base_url)
        monkeypatch.setenv("TIR_API_KEY", "vllm-local")

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"timeout": 120, "temperature": 0, "max_tokens": 64}

    @pytest.mark.xfail(
        reason="SmolLM2-135M does not decide on its own to call a tool (tool_choice auto); the "
        "agent loop with a forced first call runs in test_langchain.py",
        strict=True,
        raises=AssertionError,
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        reason="SmolLM2-135M repeats one katakana until max_tokens cuts the forced call (which "
        "then comes back as an invalid tool call saying 'raise max_tokens', as it should)",
        strict=True,
        raises=AssertionError,
    )
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )
