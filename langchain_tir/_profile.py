"""The model profile LangChain reads (`llm.profile`): what the model takes, does and fits."""

from __future__ import annotations

from langchain_core.language_models.model_profile import ModelProfile

from tir_transport import context_window


def model_profile(model: str, window_setting: int | None) -> ModelProfile:
    """`model`'s profile; `window_setting` (the `context_window` field) overrides its window."""
    profile = ModelProfile(
        text_inputs=True,
        image_inputs=False,
        image_url_inputs=False,
        pdf_inputs=False,
        audio_inputs=False,
        video_inputs=False,
        image_tool_message=False,
        pdf_tool_message=False,
        text_outputs=True,
        tool_calling=True,
        tool_choice=True,
        tool_call_streaming=True,
        structured_output=True,
        temperature=True,
    )
    # Unknown models work too; their window is left unset rather than guessed.
    known = context_window(model)
    if known is not None:
        profile["open_weights"] = True
    window = window_setting or known
    if window is not None:
        profile["max_input_tokens"] = window
    return profile
