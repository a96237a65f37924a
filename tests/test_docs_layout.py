"""The docs site's layout, as far as it can be checked without a browser.

A phone shows 40 columns of code: Material sets code at 13.6 px, a character of a monospace
font is 0.6 em wide (8.16 px), and a 360 px screen, the narrowest common one, leaves 328 px
inside a code block's padding (Chromium at 360 px: the 40-column home diagram fills its block
exactly). Code samples may scroll sideways, as code does; a diagram must not, or its right half
is cut off. The built site's own checks (the stylesheet loaded, the theme's classes that it
names, every field in the reference) are in tests/test_docs.py, beside the build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tir_transport import TIRConnection, TIREmbeddingsConnection, TIRRerankConnection
from tir_transport.adapter import TIRChatConnection

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
PHONE_COLUMNS = 40
# A fence marked `.no-copy` is a diagram: drawn text, with no copy button.
DIAGRAM = re.compile(r"^``` *\{[^}]*\.no-copy[^}]*\}\n(.*?)^```", re.MULTILINE | re.DOTALL)


def diagrams(page: Path) -> list[str]:
    return DIAGRAM.findall(page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_diagrams_fit_a_phone(page: Path) -> None:
    wide = [
        f"{len(line)} columns: {line!r}"
        for diagram in diagrams(page)
        for line in diagram.splitlines()
        if len(line) > PHONE_COLUMNS
    ]
    assert wide == [], f"wider than a phone shows ({PHONE_COLUMNS} columns)"
    # Box-drawing characters and arrows are not in every monospace font; a fallback font's
    # widths would break the drawing's columns.
    assert all(diagram.isascii() for diagram in diagrams(page))


def test_the_home_diagram_shows_every_part() -> None:
    (diagram,) = diagrams(ROOT / "docs" / "index.md")
    parts = [
        "langchain_tir",
        "llama_index_tir",
        "ray_tir",
        "tir_transport",
        "ChatTIRLlama",
        "TIREmbeddings",
        "TIRLlamaLLM",
        "TIREmbedding",
        "TIRRerank",
        "tir-llama",
        "doctor",
        "chat",
        "batch",
        "embed",
        "embeddings",
        "rerank",
    ]
    assert [part for part in parts if not re.search(rf"\b{re.escape(part)}\b", diagram)] == []


def test_the_reference_inherits_the_fields_of_the_chat_embeddings_and_rerank_bases() -> None:
    # mkdocstrings shows an inherited member only when it is named; a field added to one of
    # these bases and not to mkdocs.yml would be missing from every class that has it.
    (names,) = re.findall(r"inherited_members: \[(.*?)\]", (ROOT / "mkdocs.yml").read_text(), re.S)
    listed = [name.strip() for name in names.split(",")]
    shared = set(TIRConnection.model_fields)  # shown once, under TIRConnection
    bases = (
        set(TIRChatConnection.model_fields)
        | set(TIREmbeddingsConnection.model_fields)
        | set(TIRRerankConnection.model_fields)
    )
    assert sorted(listed) == sorted(bases - shared)
