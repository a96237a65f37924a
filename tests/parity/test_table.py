"""docs/migrating.md's side-by-side table comes from this suite: every row names a real test,
and every case where the peer is wrong (`better_than_peer`) has a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "migrating.md"
SUITE = Path(__file__).resolve().parent


def _tests(path: Path) -> dict[str, bool]:
    """Each test function of a file, and whether it is marked `better_than_peer`."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            found[node.name] = any(
                "better_than_peer" in ast.unparse(d) for d in node.decorator_list
            )
    return found


def _cited() -> dict[str, set[str]]:
    """The tests each table row names: `tests/parity/x.py::test_a`, then bare `test_b`."""
    cited: dict[str, set[str]] = {}
    for line in TABLE.read_text().splitlines():
        if not line.startswith("|") or "tests/parity/" not in line:
            continue
        for part in line.split("|")[-2].split(";"):
            match = re.search(r"tests/parity/(\w+\.py)::", part)
            assert match, f"a row cites a test without its file: {part}"
            names = re.findall(r"`(?:tests/parity/\w+\.py::)?(test_\w+)`", part)
            cited.setdefault(match.group(1), set()).update(names)
    return cited


def test_every_row_names_a_test_that_exists() -> None:
    cited = _cited()
    assert cited
    for file, names in cited.items():
        tests = _tests(SUITE / file)
        assert names <= set(tests), f"{file}: {sorted(names - set(tests))} do not exist"


def test_every_case_where_the_peer_is_wrong_has_a_row() -> None:
    cited = _cited()
    for path in sorted(SUITE.glob("test_*.py")):
        better = {name for name, marked in _tests(path).items() if marked}
        missing = better - cited.get(path.name, set())
        assert not missing, f"{path.name}: {sorted(missing)} are not in docs/migrating.md"
