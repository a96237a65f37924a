"""Every Python sample runs after exactly the install and export lines its page shows.

A reader copies a page's `pip install` and `export` lines, then its samples: each module a
sample imports must come with an extra (or a package) that page installs; a sample that calls
TIR through an adapter needs the page to export the key and the project, and one that takes
the embedding or rerank model from the environment needs the page to export it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXTRAS = re.compile(r'pip install "tir-llama\[([a-z,-]+)\]"')

# What installs each module a sample may import: an extra of tir-llama, or a package.
PROVIDERS = {
    "tir_transport": "tir-llama",
    "httpx": "tir-llama",
    "pydantic": "tir-llama",
    "langchain_tir": "[langchain]",
    "langchain_core": "[langchain]",
    "llama_index_tir": "[llama-index]",
    "llama_index": "[llama-index]",
    "ray_tir": "[ray]",
    "ray": "[ray]",
    "pyarrow": "[ray]",
    "langchain": "langchain",
    "langgraph": "langgraph",
    "langchain_classic": "langchain-classic",
}
ALL = {"[langchain]", "[llama-index]", "[ray]", "[tokens]"}
# Pages whose samples need what no line on the page installs or exports, each with why:
# strict, so that fixing one makes its entry go. None now; the mechanism stays for a page
# that cannot show its lines yet.
KNOWN: dict[str, str] = {}
# Every call of these goes to TIR: the key and the project come from the environment.
ADAPTERS = {"langchain_tir", "llama_index_tir", "ray_tir"}
PAGES = [
    pytest.param(
        path,
        id=path.name,
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN[path.name])]
        if path.name in KNOWN
        else [],
    )
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
]


def installed(page: str) -> set[str]:
    """What the page's shell lines install."""
    have = {"tir-llama"}
    for block in SHELL.findall(page):
        for extras in EXTRAS.findall(block):
            for extra in extras.split(","):
                have |= ALL if extra == "all" else {f"[{extra}]"}
        for line in block.splitlines():
            words = line.split("#")[0].split()
            if words[:2] == ["pip", "install"]:
                have |= {w for w in words[2:] if not w.startswith(("-", '"'))}
    return have


def exported(page: str) -> set[str]:
    names: set[str] = set()
    for block in SHELL.findall(page):
        for line in block.splitlines():
            if line.startswith("export "):
                names |= {w.split("=")[0] for w in line.split("#")[0].split()[1:]}
    return names


def needs(sample: str) -> tuple[set[str], set[str]]:
    """What a sample imports (top-level modules), and the variables it relies on."""
    modules = set()
    for node in ast.walk(ast.parse(sample)):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    variables = set()
    if modules & ADAPTERS and "api_key=" not in sample:
        variables |= {"TIR_API_KEY", "TIR_PROJECT_ID"}
    calls = re.findall(r"\b(TIREmbeddings?|TIRRerank)\(([^()]*)\)", sample)
    for name, arguments in calls:
        if "model=" not in arguments:
            model_env = "TIR_RERANK_MODEL" if name == "TIRRerank" else "TIR_EMBEDDING_MODEL"
            if f'"{model_env}"' not in sample:  # set by the sample itself
                variables.add(model_env)
    return modules - set(sys.stdlib_module_names), variables


@pytest.mark.parametrize("path", PAGES)
def test_samples_run_after_the_lines_their_page_shows(path: Path) -> None:
    text = path.read_text()
    have, env = installed(text), exported(text)
    problems = []
    for number, sample in enumerate(SAMPLE.findall(text), 1):
        modules, variables = needs(sample)
        for module in sorted(modules):
            provider = PROVIDERS.get(module)
            if provider is None or provider not in have:
                problems.append(
                    f"sample {number} imports {module}: nothing on the page installs it"
                )
        if variables - env:
            problems.append(f"sample {number} needs {sorted(variables - env)}: not exported")
    assert problems == []
