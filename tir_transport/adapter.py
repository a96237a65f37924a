"""What tir-llama's own adapters and CLI need from the core, beyond the user API.

For tir-llama's own adapters (`langchain_tir`, `llama_index_tir`, `ray_tir`) and its CLI
(`tir_llama`); not a user API; may change between minor versions. User code imports from
`tir_transport` itself.

The packages above the core import from here or from `tir_transport`, never from its private
modules (`tir_transport._*`); ruff's banned-api rule (TID251, pyproject.toml) holds them to it.

- building and checking requests and replies: `build_payload`, `check_single_choice`,
  `check_inputs`, `ToolCallAccumulator` (a stream's tool-call fragments into calls),
  `is_tools_rejection` (the endpoint's 400 when it has no tool parser).
- arguments and connection fields: `CONNECTION_FIELDS`, `move_unknown_arguments`,
  `argument_names`, `refuse_secrets`, `scrub_secret`; `TIRChatConnection`, the chat settings
  both chat adapters share (each package exports its own chat class, not this base).
- errors: `UnsupportedContentError` (content a text-only model cannot take), which both
  adapter packages export.
- the environment, for the CLI's `doctor`: `API_KEY_ENV_VARS`, `EMBEDDING_MODEL_ENV_VARS`,
  `RERANK_MODEL_ENV_VARS`, `env_first`, and `ModelsClient` (`GET /models`: the window served).
- hints: `TOKENS_EXTRA_HINT` (how to install the tokenizers).
"""

from ._arguments import argument_names, move_unknown_arguments
from ._chat.tools import is_tools_rejection
from ._chat.wire import ToolCallAccumulator, build_payload, check_single_choice
from ._config import API_KEY_ENV_VARS, EMBEDDING_MODEL_ENV_VARS, RERANK_MODEL_ENV_VARS, env_first
from ._connection import CONNECTION_FIELDS, TIRChatConnection
from ._embeddings.wire import check_inputs
from ._errors import UnsupportedContentError
from ._models.client import ModelsClient
from ._secrets import refuse_secrets, scrub_secret
from ._tokens.tokenizer import TOKENS_EXTRA_HINT

__all__ = [
    "API_KEY_ENV_VARS",
    "CONNECTION_FIELDS",
    "EMBEDDING_MODEL_ENV_VARS",
    "RERANK_MODEL_ENV_VARS",
    "TOKENS_EXTRA_HINT",
    "ModelsClient",
    "TIRChatConnection",
    "ToolCallAccumulator",
    "UnsupportedContentError",
    "argument_names",
    "build_payload",
    "check_inputs",
    "check_single_choice",
    "env_first",
    "is_tools_rejection",
    "move_unknown_arguments",
    "refuse_secrets",
    "scrub_secret",
]
