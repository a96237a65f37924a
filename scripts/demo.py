"""`make demo`: the main job, end to end, with a usage table at the end.

With TIR_API_KEY and TIR_PROJECT_ID set it runs against TIR GenAI's Llama 3.1 8B Instruct.
Without them it says so and uses the real local model server (SmolLM2-135M on llama.cpp),
building it on first use. It shows, in order: a LangChain chain streaming its answer; a
LangGraph agent calling a tool and answering; a LlamaIndex query engine over this project's
docs streaming its answer; then the usage of every request, per model, from `track_usage()`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import local_model_server  # this script's folder is first on sys.path
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

# At module level: LangGraph reads the node functions' type hints, which must resolve here.
from langgraph.graph import MessagesState

from tir_transport import TIRConfig, TIRError, UsageTracker, track_usage

ROOT = Path(__file__).resolve().parent.parent


def say(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def langchain_chain(options: dict[str, Any]) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_tir import ChatTIRLlama

    say("LangChain: a chain, streamed token by token")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in two sentences."), ("human", "What is {topic}?")]
    )
    chain = prompt | ChatTIRLlama(**options) | StrOutputParser()
    for token in chain.stream({"topic": "retrieval-augmented generation"}):
        print(token, end="", flush=True)
    print()


def langgraph_agent(options: dict[str, Any]) -> None:
    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import ToolNode

    from langchain_tir import ChatTIRLlama

    say("LangGraph: an agent that calls a tool, then answers")

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"It is 31 degrees and sunny in {city}."

    llm = ChatTIRLlama(**options)

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        asked = not any(m.type == "tool" for m in state["messages"])
        # The first step must call the tool (a tiny local model would not choose to); after
        # the tool has answered, the model answers in words.
        choice = "get_weather" if asked else "none"
        model = llm.bind_tools([get_weather], tool_choice=choice)
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    result = graph.compile().invoke(
        {"messages": [HumanMessage("What is the weather in Mumbai right now?")]}
    )
    for message in result["messages"]:
        if isinstance(message, AIMessage) and message.tool_calls:
            call = message.tool_calls[0]
            print(f"tool call:   {call['name']}({call['args']})")
        elif message.type == "tool":
            print(f"tool result: {message.content}")
        elif isinstance(message, AIMessage):
            print(f"answer:      {message.text}")


def llama_index_query(options: dict[str, Any], pages: list[str] | None) -> None:
    from llama_index.core import SimpleDirectoryReader, SummaryIndex

    from llama_index_tir import TIRLlamaLLM

    say("LlamaIndex: a query engine over this project's docs, streamed")
    # A SummaryIndex needs no embedding model: every page goes to the model, packed into its
    # context window and refined page group by page group.
    docs = SimpleDirectoryReader(str(ROOT / "docs"), required_exts=[".md"]).load_data()
    if pages is not None:
        docs = [d for d in docs if d.metadata.get("file_name") in pages]
    llm = TIRLlamaLLM(**options)
    engine = SummaryIndex.from_documents(docs).as_query_engine(llm=llm, streaming=True)
    response = engine.query("In one sentence: what does tir-llama give a LangChain user?")
    for token in response.response_gen:  # type: ignore[union-attr]
        print(token, end="", flush=True)
    print()


def usage_table(usage: UsageTracker) -> None:
    say("Usage, from tir_transport.track_usage()")
    print(f"{'model':32} {'requests':>8} {'no usage':>8} {'input':>8} {'output':>8} {'total':>8}")
    requests = usage.requests_by_model
    without = usage.requests_without_usage_by_model
    for model, totals in usage.by_model.items():
        print(
            f"{model:32} {requests.get(model, 0):8} {without.get(model, 0):8} "
            f"{totals.input_tokens:8} {totals.output_tokens:8} {totals.total_tokens:8}"
        )
    print(
        f"{'total':32} {usage.requests:8} {usage.requests_without_usage:8} "
        f"{usage.input_tokens:8} {usage.output_tokens:8} {usage.total_tokens:8}"
    )
    if usage.requests_without_usage:
        # Totals that silently cover only some requests would look complete: say so.
        print(
            f"{usage.requests_without_usage} of {usage.requests} requests reported no usage "
            "(the local llama.cpp server sends none when streaming): the token totals leave "
            "them out."
        )


def main() -> int:
    config = TIRConfig.from_env()
    server = None
    llama_index_options: dict[str, Any] = {}
    pages: list[str] | None = None  # every page of the docs
    if config.api_key is not None and config.project_id is not None:
        print(f"Using TIR: {config.chat_url()}")
        options: dict[str, Any] = {"max_tokens": 200, "temperature": 0.2}
    else:
        print(
            "TIR_API_KEY and TIR_PROJECT_ID are not set: using the embedded default, a local "
            "llama.cpp server with SmolLM2-135M-Instruct (built on first use, once per machine)."
        )
        server = local_model_server.start()
        options = {
            "api_key": "local",
            "base_url": server.base_url,
            "model": local_model_server.MODEL_NAME,
            "max_tokens": 120,
            "temperature": 0.2,
        }
        # LlamaIndex counts tokens with its own tokenizer, not SmolLM2's: leave a wide margin.
        llama_index_options["context_window"] = local_model_server.N_CTX // 2
        # On two CPU cores, refining over every page takes minutes: the home page will do.
        pages = ["index.md"]
    try:
        with track_usage() as usage:
            langchain_chain(options)
            langgraph_agent(options)
            llama_index_query({**options, **llama_index_options}, pages)
        usage_table(usage)
    except TIRError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            local_model_server.stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
