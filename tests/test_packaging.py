"""The distribution's shape: what imports what, and what a missing extra says."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply

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
    assert names == ["aiohttp", "httpx", "pydantic", "urllib3"]
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
    for path in (ROOT / "tir_transport").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert not words[1].startswith(above), f"{path.name}: {line}"


# The core's house, floor by floor: a part imports parts on floors below it only. The pure
# pieces at the bottom; the transport; the API folders side by side on one floor above it,
# never importing each other; what reads chat's format (token counts, the adapters' argument
# sorting) above chat; the connection model the adapters inherit; the public faces on top.
FLOORS: dict[str, int] = {
    **dict.fromkeys(["_secrets", "_sse", "_peer_names", "_json", "_version"], 0),
    "_errors": 1,
    "_api_key": 2,
    **dict.fromkeys(["_config", "_retry", "_usage", "_limits"], 3),
    "_transport": 4,
    **dict.fromkeys(["_chat", "_embeddings", "_rerank", "_models"], 5),
    **dict.fromkeys(["_tokens", "_arguments"], 6),
    "_connection": 7,
    **dict.fromkeys(["adapter", "__init__"], 8),
}


def _core_imports() -> set[tuple[str, str]]:
    """(importer, imported) between the core's parts, read from every module's imports."""
    import ast

    pairs = set()
    core = ROOT / "tir_transport"
    for path in core.rglob("*.py"):
        part = path.relative_to(core).parts[0].removesuffix(".py")
        depth = len(path.relative_to(core).parts) - 1  # a module in a folder: one dot more
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                up = node.level - depth
                if up == 1 and node.module:  # `from .._x import` (or `from ._x` at the top)
                    pairs.add((part, node.module.split(".")[0]))
                elif up == 1:  # `from . import x`
                    pairs.update((part, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "tir_transport."
            ):
                pairs.add((part, node.module.split(".")[1]))  # type: ignore[union-attr]
    return {(a, b) for a, b in pairs if a != b}


def test_the_core_is_built_floor_by_floor() -> None:
    pairs = _core_imports()
    assert set(FLOORS) == {a for a, _ in pairs} | {b for _, b in pairs}
    upward = sorted((a, b) for a, b in pairs if FLOORS[b] >= FLOORS[a])
    assert upward == [], "a part imports one on its own floor or above"
    # It reads something: the transport is under every API, chat under tokens.
    assert {("_chat", "_transport"), ("_embeddings", "_transport"), ("_tokens", "_chat")} <= pairs


def test_every_private_module_is_banned_above_it() -> None:
    # ruff's banned-api (TID251) keeps the packages above off tir_transport's and ray_tir's
    # private modules; it names modules one by one, so a new private module must be added.
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "TID251" in ruff["select"]
    banned = set(ruff["flake8-tidy-imports"]["banned-api"])
    private = {
        f"{package}.{path.stem}"
        for package in ("tir_transport", "ray_tir")
        for path in (ROOT / package).iterdir()
        if path.name.startswith("_")
        and path.name != "__init__.py"
        and (path.suffix == ".py" or (path / "__init__.py").exists())
    }
    assert private <= banned, sorted(private - banned)
    assert banned <= private, sorted(banned - private)  # none stale


# -- the built distributions ---------------------------------------------------------------

# The Pythons, beside 3.11 (this venv's), that the README sample is run on from the built wheel;
# the classifiers claim these and no other.
OTHER_PYTHONS = ("3.12", "3.13")
# The repository: every Project-URL and every README link into the project starts with it.
SOURCE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
# Tracked files the sdist leaves out on purpose: CI's own entry point.
NOT_SHIPPED = {".ci/run"}
# Tests run from the unpacked sdist: they need conftest.py's emulator fixture, tests/support's
# emulator and its recorded TIR stream (tests/support/fixtures).
SDIST_RUNS = ("tests/tir_transport/test_emulator.py", "tests/tir_transport/test_sse.py")
# Which Python, which tir-llama, and whether its packages come from that venv.
WHICH = (
    "import sys, importlib.metadata as m, tir_transport, langchain_tir, llama_index_tir; "
    "print('%d.%d' % sys.version_info[:2], m.version('tir-llama'), "
    "tir_transport.__file__.startswith(sys.prefix))"
)
# What the README's "In short" sample gets from the emulator, for each of its two chat calls.
RIVERS = "The Ganga, the Narmada and the Godavari."


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path

    def metadata(self) -> Message:
        """The wheel's METADATA: what the package index shows (the long description is its body)."""
        with zipfile.ZipFile(self.wheel) as wheel:
            (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            return email.message_from_string(wheel.read(name).decode("utf-8"))

    def sdist_names(self) -> set[str]:
        """Paths inside the sdist, relative to its top folder."""
        with tarfile.open(self.sdist) as sdist:
            return {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist, and the wheel built from it (not from the checkout), once per module."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("tir_llama-*.whl")
    (sdist,) = out.glob("tir_llama-*.tar.gz")
    return Dist(sdist=sdist, wheel=wheel)


def assert_cli_version(bin_dir: Path, env: dict[str, str], cwd: Path) -> None:
    """`tir-llama --version` from an install says the newest release in CHANGELOG.md."""
    version = subprocess.run(
        [str(bin_dir / "tir-llama"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert version.stdout.strip() == f"tir-llama {newest_release()}", version.stderr


def newest_release() -> str:
    """CHANGELOG.md's newest released version (dated, below an `[Unreleased]` heading)."""
    headings = re.findall(r"^## (.*)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "[Unreleased]", headings[:2]
    release = re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})", headings[1])
    assert release, f"the newest release heading is {headings[1]!r}"
    return release[1]


def in_repository(url: str) -> str:
    """The checkout's path that a link to a file or folder of the repository's main shows."""
    for view in ("blob", "tree"):
        if url.startswith(f"{SOURCE}/{view}/main/"):
            return url.removeprefix(f"{SOURCE}/{view}/main/")
    raise AssertionError(f"{url} is not a file or folder of {SOURCE} on main")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.timeout(600)
def test_the_built_wheel_installs_and_imports(dist: Dist, tmp_path: Path) -> None:
    """Install the wheel built from the sdist and import everything from it.

    An editable install reads the checkout, so a file the sdist or the wheel leaves out would
    go unnoticed; here every package and the console script come from the installed wheel.
    """
    site, wheel = tmp_path / "site", str(dist.wheel)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
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
    assert_cli_version(site / "bin", env, tmp_path)


@pytest.mark.timeout(600)
def test_the_version_is_the_changelogs_newest_release(dist: Dist) -> None:
    import tir_transport

    released = newest_release()
    assert dist.metadata()["Version"] == released
    assert tir_transport.__version__ == released
    assert dist.wheel.name.startswith(f"tir_llama-{released}-")
    assert dist.sdist.name == f"tir_llama-{released}.tar.gz"


@pytest.mark.timeout(600)
def test_the_metadata_a_package_index_shows(dist: Dist) -> None:
    metadata = dist.metadata()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert SOURCE.startswith("https://") and urls["Source"] == SOURCE
    assert all(url.startswith(SOURCE) for url in urls.values()), urls
    # The docs folder and the changelog they point to are in the repository.
    assert (ROOT / in_repository(urls["Documentation"])).is_dir()
    assert (ROOT / in_repository(urls["Changelog"])).is_file()
    # The summary names what the package does, not only chat.
    summary = metadata["Summary"]
    named = ("LangChain", "LlamaIndex", "tool calling", "structured output", "embeddings")
    for what in (*named, "rerank", "Ray", "command line"):
        assert what in summary, what
    classifiers = metadata.get_all("Classifier", [])
    pythons = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)}
    # Claimed: the venv's Python (requires-python's floor) and the ones the sample runs on.
    assert pythons == {"3.11", *OTHER_PYTHONS}
    assert metadata["Requires-Python"] == ">=3.11"
    assert len([c for c in classifiers if c.startswith("Development Status ::")]) == 1
    assert "Typing :: Typed" in classifiers
    # The license is an SPDX expression; PEP 639 deprecates license classifiers beside it.
    assert metadata["License-Expression"] == "MIT"
    assert not [c for c in classifiers if c.startswith("License ::")]


@pytest.mark.timeout(600)
def test_the_long_descriptions_links_are_absolute(dist: Dist) -> None:
    """A relative link in the README dies on the package index; ours point into the repository."""
    metadata = dist.metadata()
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = str(metadata.get_payload())
    assert description.strip() == (ROOT / "README.md").read_text().strip()
    inline = re.findall(r"\]\(\s*<?([^)\s>]+)", description)
    referenced = re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?$", description, re.MULTILINE)
    html = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)""", description)
    links = inline + referenced + html
    assert links, "the README has no links: this test checks nothing"
    assert [link for link in links if not link.startswith("https://")] == []
    # Links into the repository name files and headings that exist (the index cannot be asked).
    for link in links:
        if not link.startswith(SOURCE):
            continue
        path, _, anchor = in_repository(link).partition("#")
        assert (ROOT / path).exists(), link
        if anchor:
            headings = re.findall(r"^#+ (.*)$", (ROOT / path).read_text(), re.MULTILINE)
            assert anchor in {github_slug(h) for h in headings}, link


@pytest.mark.timeout(600)
def test_the_sdist_holds_the_tests_and_what_they_read(dist: Dist) -> None:
    names = dist.sdist_names()
    for needed in (
        "tests/conftest.py",
        "tests/support/emulator/__init__.py",
        "tests/support/fixtures/seed_stream.txt",
        "scripts/local_model_server.py",
        "docs/index.md",
        "mkdocs.yml",
        "benchmarks/bench.py",
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
    ):
        assert needed in names, needed
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): no list of tracked files to compare")
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    # Every tracked file ships but the ones left out on purpose; a new top-level folder that
    # the sdist's include list does not name fails here.
    assert set(tracked) - NOT_SHIPPED - names == set()
    assert NOT_SHIPPED & names == set()


@pytest.mark.timeout(600)
def test_the_sdists_own_tests_run_from_it(dist: Dist, tmp_path: Path) -> None:
    """What a packager does: unpack the sdist and run its tests there, without the checkout."""
    with tarfile.open(dist.sdist) as sdist:
        sdist.extractall(tmp_path, filter="data")
    (top,) = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    # Every test module collects (conftest, tests/support, and the scripts, docs and
    # benchmarks the tests read): a module that fails to import is an error, so rc 2.
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=top,
        env=env,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-2000:]
    modules = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    shipped = {str(p.relative_to(top)) for p in (top / "tests").rglob("test_*.py")}
    assert len(shipped) > 50 and modules == shipped
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *SDIST_RUNS,
        ],
        capture_output=True,
        text=True,
        cwd=top,
        env=env,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert f"rootdir: {top}" in ran.stdout
    summary = ran.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


# -- the README sample on the other Pythons ------------------------------------------------


def find_python(minor: str) -> Path | None:
    """The newest `minor` (3.12) Python under pyenv, else `python3.12` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    if shutil.which("pyenv"):
        found = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = Path(found.stdout.strip()) if found.returncode == 0 else root
    # Releases only: no 3.13t (free-threaded), 3.13-dev or virtualenvs named after them.
    versions = [
        v for v in (root / "versions").glob(f"{minor}.*") if v.name[len(minor) + 1 :].isdigit()
    ]
    for version in sorted(versions, key=lambda v: int(v.name.rsplit(".", 1)[1]), reverse=True):
        python = version / "bin" / f"python{minor}"
        if python.is_file():
            return python
    # Not pyenv's shim: it runs only a version pyenv has (and fails for a missing one).
    shims = str(root / "shims")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != shims)
    on_path = shutil.which(f"python{minor}", path=path)
    return Path(on_path) if on_path else None


def readme_sample() -> str:
    """The README's "In short" Python sample, as a reader copies it."""
    section = (ROOT / "README.md").read_text().split("\n## In short\n", 1)[1]
    found = re.search(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert found, "README.md's In short has no Python sample"
    return found[1]


@pytest.mark.parametrize("minor", OTHER_PYTHONS)
@pytest.mark.timeout(300)
def test_the_readme_sample_runs_on_python(
    minor: str, dist: Dist, emulator: Emulator, tmp_path: Path
) -> None:
    """A fresh venv of that Python, the built wheel with the extras the sample imports, the
    README's "In short" sample against the emulator, as a reader with TIR settings runs it.
    """
    python = find_python(minor)
    if python is None:
        places = "under `pyenv root`/versions or on PATH"
        message = f"Python {minor} is not installed ({places}): `pyenv install {minor}` adds it"
        # .ci/run sets TIR_LLAMA_REQUIRE_VLLM=1, most CI services set CI: there the
        # classifier for this Python must be proven, never skipped.
        if os.environ.get("CI") in ("1", "true") or os.environ.get("TIR_LLAMA_REQUIRE_VLLM") == "1":
            pytest.fail(f"{message}; in CI (CI or TIR_LLAMA_REQUIRE_VLLM set) it must run")
        pytest.skip(message)
    venv = tmp_path / "venv"
    # The extras the sample imports. The README's line installs [all], whose Ray and tokens
    # took 96 s and 850 MB per Python here, for nothing the sample runs.
    wheel = f"{dist.wheel}[langchain,llama-index]"
    made = subprocess.run(
        [str(python), "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr[-2000:]
    # Nothing of this checkout or of the dev venv may leak in: the sample sees the wheel only.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("TIR_")
    }
    # --no-compile: byte-compiling every installed module (LlamaIndex's thousands) is CPU that
    # two shared cores need elsewhere; the sample compiles only what it imports.
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", wheel],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    sample = tmp_path / "sample.py"
    sample.write_text(readme_sample())
    emulator.queue(Reply(text=RIVERS), Reply(text=RIVERS))
    reader = {
        **env,
        "TIR_API_KEY": TEST_KEY,
        "TIR_PROJECT_ID": "1234",
        "TIR_BASE_URL": emulator.base_url,
        "TIR_EMBEDDING_MODEL": "test-embedding-model",
    }
    ran = subprocess.run(
        [str(venv / "bin" / "python"), str(sample)],
        capture_output=True,
        text=True,
        env=reader,
        cwd=tmp_path,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    # Its own asserts passed; both chat answers are the emulator's, printed whole.
    assert ran.stdout.splitlines() == [RIVERS, RIVERS]
    chats = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
    embeddings = [r for r in emulator.requests if r.path.endswith("/embeddings")]
    assert len(chats) == 2 and len(embeddings) == 1
    assert embeddings[0].json["input"] == ["The Ganga flows east.", "The Narmada flows west."]
    assert {r.headers["authorization"] for r in chats} == {f"Bearer {TEST_KEY}"}
    # And it was that Python, with the wheel's packages and version.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", WHICH],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert where.stdout.split() == [minor, newest_release(), "True"], where.stderr[-2000:]
    assert_cli_version(venv / "bin", env, tmp_path)
