"""The distribution's shape: what imports what, and what a missing extra says."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tir_transport", "langchain_tir", "llama_index_tir", "ray_tir", "tir_llama")

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
    for package in PACKAGES:
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


def test_the_core_imports_nothing_above_it() -> None:
    # Read, not run: no module of tir_transport names a package above it.
    above = ("langchain_tir", "llama_index_tir", "ray_tir", "tir_llama", "langchain", "llama_index")
    for path in (ROOT / "tir_transport").glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert not words[1].startswith(above), f"{path.name}: {line}"


@pytest.mark.timeout(600)
def test_the_built_wheel_installs_and_imports(tmp_path: Path) -> None:
    """Build the sdist, the wheel from it, install the wheel, import everything from it.

    An editable install reads the checkout, so a file the sdist or the wheel leaves out would
    go unnoticed; here every package and the console script come from the installed wheel.
    """
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(dist.glob("tir_llama-*.whl"))
    sdists = list(dist.glob("tir_llama-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *wheels],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    # PYTHONPATH comes before site-packages (whose editable-install path file points at the
    # checkout): our packages come from the wheel, their dependencies from this venv.
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import importlib, pathlib, sys\n"
        f"for name in {PACKAGES!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert pathlib.Path(module.__file__).is_relative_to({str(site)!r}), module\n"
        f"    assert (pathlib.Path(module.__file__).parent / 'py.typed').exists(), name\n"
        "from tir_llama.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "tir-llama" in imported.stdout
    script = subprocess.run(
        [str(site / "bin" / "tir-llama"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert script.returncode == 0 and "doctor" in script.stdout, script.stderr[-2000:]
    with tarfile.open(sdists[0]) as sdist:
        names = {Path(n).name for n in sdist.getnames()}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"} <= names
