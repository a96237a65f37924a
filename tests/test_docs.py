"""Every Python sample in the docs (and the README) runs against the emulator, and shows its
outcome: each asserts what it promises (the tool was called with the right arguments and the
answer used its result, a vector per text, the right passage retrieved or kept by the
reranker), and where the outcome is on the wire, the test checks what the emulator received.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from llama_index.core import Settings

from langchain_tir import ChatTIRLlama, TIREmbeddings
from langchain_tir import TIRRerank as LangChainRerank
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import TIRConnection

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
RERANKER = "test-rerank-model"  # what a reader sets as TIR_RERANK_MODEL


def samples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(SAMPLE.finditer(page.read_text()), 1):
            found.append((f"{page.name}#{number}", match.group(1)))
    return found


SAMPLES = samples()


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 15


def test_every_sample_asserts_its_outcome() -> None:
    # Printing is not showing: a sample that broke would print something else and pass.
    silent = [where for where, code in SAMPLES if not re.search(r"^\s*(assert|raise) ", code, re.M)]
    assert silent == [], "these samples assert nothing about their outcome"


def test_setups_and_checks_name_samples_that_exist() -> None:
    names = {where for where, _ in SAMPLES}
    assert set(SETUP) | set(CHECK) | OFFLINE <= names


def _weather_tool_call(emulator: Emulator) -> None:
    # What the model does when asked about Pune's weather with get_weather at hand; the
    # emulator then answers from the tool result it is sent back (it must be sent back).
    call = {"id": "call-1", "name": "get_weather", "arguments": '{"city": "Pune"}'}
    emulator.queue(Reply(tool_calls=[call]))
    emulator.answer_from_tool_results = True


def _add_tool_call(emulator: Emulator) -> None:
    emulator.queue(Reply(tool_calls=[{"name": "add", "arguments": '{"a": 2, "b": 3}'}]))
    emulator.answer_from_tool_results = True


def _window(emulator: Emulator) -> None:
    emulator.max_context = 131_072  # Llama 3.1 8B's window: vLLM refuses a longer prompt


# What the emulator is told before a sample, so that the outcome the sample promises can come
# about (a model that calls the tool; a window to overflow).
SETUP: dict[str, Callable[[Emulator], None]] = {
    "tools.md#1": _weather_tool_call,
    "tools.md#2": _weather_tool_call,
    "tools.md#3": _weather_tool_call,
    "usage.md#3": _add_tool_call,
    "errors.md#1": _window,
}


def _tool_result_sent_back(result: str) -> Callable[[Emulator], None]:
    def check(emulator: Emulator) -> None:
        sent = [m for r in emulator.requests for m in r.json["messages"]]
        assert [m["content"] for m in sent if m["role"] == "tool"] == [result]

    return check


def _sent_in_one_request(*texts: str) -> Callable[[Emulator], None]:
    def check(emulator: Emulator) -> None:
        assert [r.json["input"] for r in emulator.requests] == [list(texts)]

    return check


def _context_in_prompt(passage: str) -> Callable[[Emulator], None]:
    def check(emulator: Emulator) -> None:
        chats = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
        assert chats and all(passage in json.dumps(r.json["messages"]) for r in chats)

    return check


def _reranked(
    documents: list[str],
    top_n: int | None,
    kept: str | None = None,
    left_out: tuple[str, ...] = (),
) -> Callable[[Emulator], None]:
    """The documents went to the reader's rerank model; an answer used only what it kept."""

    def check(emulator: Emulator) -> None:
        (rerank,) = emulator.rerank_requests()
        assert rerank.json["model"] == RERANKER
        assert sorted(rerank.json["documents"]) == sorted(documents)
        assert rerank.json.get("top_n") == top_n  # None: every document scored
        chats = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
        if kept is None:
            assert chats == []  # ranked, not answered
            return
        assert chats
        for chat in chats:
            prompt = json.dumps(chat.json["messages"], ensure_ascii=False)
            assert kept in prompt
            assert all(text not in prompt for text in left_out)

    return check


RIVERS = [
    "The Narmada flows west into the Arabian Sea.",
    "The Ganga flows east into the Bay of Bengal.",
    "Paris is the capital of France.",
]

# What a sample's outcome is on the wire, checked at the emulator after it ran.
CHECK: dict[str, Callable[[Emulator], None]] = {
    "tools.md#2": _tool_result_sent_back("It is sunny in Pune."),
    "tools.md#3": _tool_result_sent_back("It is sunny in Pune."),
    "usage.md#3": _tool_result_sent_back("5"),
    "migrating.md#2": _sent_in_one_request("first text", "second text"),
    "rag.md#1": _context_in_prompt("Llama 3.1 8B Instruct is served on TIR's GenAI API."),
    "rag.md#2": _context_in_prompt("TIR is the AI platform of E2E Networks."),
    "llama-index.md#1": _context_in_prompt("TIR is E2E Networks' AI platform."),
    "rag.md#4": _reranked([*RIVERS, "The Godavari flows east across the Deccan."], top_n=2),
    "rag.md#5": _reranked(["Paris is in France.", "The Ganga flows east."], top_n=None),
    "rag.md#6": _reranked(RIVERS, top_n=1, kept=RIVERS[1], left_out=(RIVERS[0], RIVERS[2])),
}

# Samples that make no request: they run without TIR_BASE_URL (it would change their URLs).
OFFLINE = {"configuration.md#1", "configuration.md#2"}  # the key, the URLs


@pytest.mark.parametrize(("where", "code"), SAMPLES, ids=[w for w, _ in SAMPLES])
def test_sample_runs(
    where: str,
    code: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # Samples that write files (bulk output) write them here, not into the checkout; with Ray,
    # where its workers run, since they write the output (a user's driver and workers share it).
    monkeypatch.chdir(tmp_path)
    if "ray" in code:
        monkeypatch.chdir(request.getfixturevalue("ray_local"))
    # The environment a reader sets, aimed at the emulator instead of TIR.
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_PROJECT_ID", "1234")
    if where not in OFFLINE:
        monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "test-embedding-model")
    monkeypatch.setenv("TIR_RERANK_MODEL", RERANKER)
    # Vectors as wide as a real model's (multilingual-e5-small): at the emulator's default 32,
    # two words of a short text can share a dimension and rank the wrong passage first.
    emulator.embed_dim = 384
    if where in SETUP:
        SETUP[where](emulator)
    namespace: dict[str, object] = {"__name__": f"sample_{where}"}
    try:
        exec(compile(code, where, "exec"), namespace)  # its own asserts check its outcome
    finally:
        # LlamaIndex's Settings are global: the next test starts without the sample's models.
        Settings.llm = None  # type: ignore[assignment]
        Settings.embed_model = None  # type: ignore[assignment]
    assert bool(emulator.requests) == (where not in OFFLINE)
    if where in CHECK:
        CHECK[where](emulator)


@pytest.mark.timeout(300)
def test_docs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (tmp_path / "reference" / "index.html").read_text()
    assert documented_fields() - set(re.findall(r'id="([\w.]+)"', reference)) == set()
    # docs/stylesheets/extra.css (phone-width tables, the copy button's place) is loaded, and
    # what it names is still what the theme makes: a renamed class would undo it silently.
    home = (tmp_path / "index.html").read_text()
    assert 'href="stylesheets/extra.css"' in home
    css = (tmp_path / "stylesheets" / "extra.css").read_text()
    theme = "".join(f.read_text() for f in (tmp_path / "assets").glob("*/*.min.*"))
    for name in sorted(set(re.findall(r"\.(md-[\w-]+)", css))):
        assert name in theme, f"extra.css names .{name}, which the theme no longer has"
    assert "max-width:44.984375em" in theme  # the theme's phone breakpoint, as extra.css's
    assert 'class="doc-signature' in reference
    assert '<div class="no-copy highlight">' in home  # the diagram, without a copy button


def documented_fields() -> set[str]:
    """Where each public class's fields should be in the reference, as heading ids.

    Each class shows the fields it declares and those of its embeddings or rerank base; the
    connection fields every class shares are shown once, under `TIRConnection`. The
    frameworks' own fields are theirs to document.
    """
    shared = set(TIRConnection.model_fields)
    ids = {f"tir_transport.TIRConnection.{name}" for name in shared}
    for cls in (
        ChatTIRLlama,
        TIREmbeddings,
        LangChainRerank,
        TIRLlamaLLM,
        TIREmbedding,
        LlamaIndexRerank,
    ):
        ours = {
            name
            for base in cls.__mro__
            if base.__module__.split(".")[0]
            in {"langchain_tir", "llama_index_tir", "tir_transport"}
            for name in inspect.get_annotations(base)
            if name in cls.model_fields and name not in shared
        }
        public = cls.__module__.split(".")[0]
        ids |= {f"{public}.{cls.__name__}.{name}" for name in ours}
    return ids
