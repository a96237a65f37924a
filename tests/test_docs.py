"""Every Python sample in the docs (and the README) runs, against the emulator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def samples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(SAMPLE.finditer(page.read_text()), 1):
            found.append((f"{page.name}#{number}", match.group(1)))
    return found


SAMPLES = samples()


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 15


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
    monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "test-embedding-model")
    namespace: dict[str, object] = {"__name__": f"sample_{where}"}
    exec(compile(code, where, "exec"), namespace)
    assert emulator.requests or "TIRConfig" in code


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
    assert (tmp_path / "reference" / "index.html").exists()
