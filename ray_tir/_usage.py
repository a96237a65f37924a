"""What a job cost: the token columns of its rows, or of its output folder, summed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray.data

from tir_transport import Usage

from ._folder import _row_files  # noqa: TID251
from ._settings import read_settings  # noqa: TID251

__all__ = ["usage"]


def _token_rows(paths: Iterable[Path]) -> Iterator[Mapping[str, Any]]:
    for path in paths:
        if path.suffix == ".parquet":
            names = pq.read_schema(path).names
            columns = [c for c in ("input_tokens", "output_tokens", "error") if c in names]
            yield from pq.read_table(path, columns=columns).to_pylist()
        else:
            with path.open(encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())


def _paths(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        paths.extend(_row_files(path) if path.is_dir() else [path])
    return paths


def _model_of(path: Path) -> str | None:
    settings = read_settings(path.parent)
    return None if settings is None else settings.get("model")


def usage(
    source: ray.data.Dataset
    | Sequence[Mapping[str, Any]]
    | str
    | os.PathLike[str]
    | Sequence[str | os.PathLike[str]],
) -> dict[str, Any]:
    """Totals of a finished chat job from its token columns.

    Args:
        source: the job's rows (a Dataset or a list of rows), or its output: a folder, a
            file, or the list of files `write_output` returned (what one run paid for).

    Returns:
        `usage` (a `Usage`), `rows`, `rows_with_error`, `rows_without_usage` (answered
        rows whose server reported no usage: not counted, never as zero), and `per_model`
        (model name -> `Usage`, from the settings recorded with a folder's output; empty for
        rows, which do not say which model answered them).

    Raises:
        ValueError: rows without the token columns (not the output of `chat`).
    """
    per_model: dict[str, Usage] = {}
    if isinstance(source, ray.data.Dataset):
        groups: list[tuple[str | None, Iterable[Mapping[str, Any]]]] = [(None, source.iter_rows())]
    elif isinstance(source, str | os.PathLike) or (
        isinstance(source, Sequence) and source and isinstance(source[0], str | os.PathLike)
    ):
        paths = _paths(source)  # type: ignore[arg-type]
        models: dict[Path, str | None] = {}  # a folder's settings read once, not per file
        for path in paths:
            if path.parent not in models:
                models[path.parent] = _model_of(path)
        groups = [(models[path.parent], _token_rows([path])) for path in paths]
    else:
        groups = [(None, source)]  # type: ignore[list-item]
    total, count, errors, unknown = Usage(), 0, 0, 0
    for model, rows in groups:
        for row in rows:
            if "input_tokens" not in row:
                raise ValueError(
                    "these rows have no token columns: usage() sums the output of "
                    "ray_tir.chat (embedding rows carry none: the server counts tokens per "
                    "request, not per text)"
                )
            count += 1
            if row.get("error"):
                errors += 1
            elif row.get("input_tokens") is None:
                unknown += 1
            else:
                tokens = Usage(
                    row["input_tokens"],
                    row["output_tokens"] or 0,
                    row["input_tokens"] + (row["output_tokens"] or 0),
                )
                total = total + tokens
                if model is not None:
                    per_model[model] = per_model.get(model, Usage()) + tokens
    return {
        "usage": total,
        "rows": count,
        "rows_with_error": errors,
        "rows_without_usage": unknown,
        "per_model": per_model,
    }
