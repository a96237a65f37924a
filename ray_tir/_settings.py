"""The job's settings, recorded beside its rows: a resume cannot mix two kinds of answer."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._folder import _RECORD, OutputFolderError, _one_line  # noqa: TID251
from ._sink import _atomic  # noqa: TID251

__all__ = ["differences", "read_settings"]


def _records(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{_RECORD}*"))


def read_settings(output: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings recorded with the output in `output` (None: none recorded)."""
    records = _records(Path(output))
    if not records:
        return None
    try:
        settings: dict[str, Any] = json.loads(records[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputFolderError(
            f"{records[0]} (the job's recorded settings) cannot be read: {_one_line(e)}"
        ) from None
    return settings


def _write_settings(folder: Path, settings: Mapping[str, Any], run: str) -> None:
    data = json.dumps({**settings, "run": run}, indent=1, sort_keys=True, default=repr)
    _atomic(folder / f"{_RECORD}{run}", lambda f: f.write(data.encode()))


def _normal(settings: Mapping[str, Any]) -> dict[str, Any]:
    # Compared as recorded (JSON): a tuple and a list of stop words are the same setting.
    normal: dict[str, Any] = json.loads(json.dumps(dict(settings), default=repr))
    normal.pop("run", None)
    return normal


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the folder's recorded settings and this run's, named."""
    old, new = _normal(recorded), _normal(now)
    # Compared only when both say: the API knows no input file, and folders written before
    # the server was recorded do not name it.
    for name in ("input", "server"):
        if old.get(name) is None or new.get(name) is None:
            old.pop(name, None)
            new.pop(name, None)
    return [
        f"{name}: {old.get(name)!r} in the folder, {new.get(name)!r} now"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
