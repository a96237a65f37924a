"""`make demo`: a streamed chat through tir_transport.

With TIR_API_KEY and TIR_PROJECT_ID set it talks to TIR GenAI's Llama 3.1 8B Instruct;
without them it says so and starts the real local model server (SmolLM2 on llama.cpp),
building it on first use. The main-job issue (#8) turns this into the full demo.
"""

from __future__ import annotations

import sys

import local_model_server  # this script's folder is first on sys.path

from tir_transport import TIRClient, TIRConfig, TIRError, build_payload, track_usage

QUESTION = "In two sentences, what is retrieval-augmented generation?"


def main() -> int:
    config = TIRConfig.from_env()
    server = None
    if config.api_key is None or config.project_id is None:
        print(
            "TIR_API_KEY / TIR_PROJECT_ID are not set: using the local model server "
            "(SmolLM2-135M on llama.cpp) instead of TIR.\n",
            flush=True,
        )
        server = local_model_server.start()
        config = TIRConfig.from_env(api_key="local", base_url=server.base_url)
        model = local_model_server.MODEL_NAME
    else:
        model = config.model
    try:
        client = TIRClient(config)
        print(f"> {QUESTION}\n", flush=True)
        with track_usage() as usage:
            messages = [{"role": "user", "content": QUESTION}]
            for chunk in client.stream(build_payload(messages, model, stream=True, max_tokens=120)):
                print(chunk.text or "", end="", flush=True)
        print(f"\n\nrequests: {usage.requests}, tokens: {usage.usage}")
        client.close()
    except TIRError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            local_model_server.stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
