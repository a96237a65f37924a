"""The distribution's shape: what imports what, and what a missing extra says."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Makes the named top-level packages unimportable, as if their extra were not installed.
_BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_core_imports_no_framework() -> None:
    result = run(
        "import sys, tir_transport; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain', 'llama_index', 'ray')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "blocked", "extra"),
    [
        ("langchain_tir", ["langchain_core"], "tir-llama[langchain]"),
        ("llama_index_tir", ["llama_index"], "tir-llama[llama-index]"),
        ("ray_tir", ["ray"], "tir-llama[ray]"),
    ],
)
def test_adapter_without_its_extra_names_the_extra(
    package: str, blocked: list[str], extra: str
) -> None:
    result = run(_BLOCKER.format(blocked=set(blocked)) + f"\nimport {package}")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError")
    assert f'pip install "{extra}"' in last_line


@pytest.mark.parametrize("package", ["langchain_tir", "llama_index_tir", "ray_tir"])
def test_adapters_do_not_import_each_other(package: str) -> None:
    others = {"llama_index", "langchain_core", "ray"} - {
        {"langchain_tir": "langchain_core", "llama_index_tir": "llama_index", "ray_tir": "ray"}[
            package
        ]
    }
    result = run(_BLOCKER.format(blocked=others) + f"\nimport {package}")
    assert result.returncode == 0, result.stderr


def test_every_package_is_typed() -> None:
    for package in ("tir_transport", "langchain_tir", "llama_index_tir", "ray_tir"):
        assert (ROOT / package / "py.typed").exists()


def test_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = sorted(d.split(">")[0].split("=")[0].split("<")[0] for d in project["dependencies"])
    assert names == ["httpx", "pydantic"]
    extras = project["optional-dependencies"]
    assert extras["langchain"] == ["langchain-core>=1.4,<2"]
    assert extras["llama-index"] == ["llama-index-core>=0.14,<0.15"]
    assert extras["ray"] == ["ray[data]==2.60.0"]
    assert project["requires-python"] == ">=3.11"


def test_public_names() -> None:
    import tir_transport

    for name in (
        "TIRError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "BadRequestError",
        "ContextLengthExceededError",
        "RateLimitError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "StreamInterruptedError",
        "Usage",
        "track_usage",
    ):
        assert name in tir_transport.__all__
        assert hasattr(tir_transport, name)
