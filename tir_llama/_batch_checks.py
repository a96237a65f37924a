"""`batch`'s checks that need no Ray and change nothing: the output, the settings, the ids."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from ray_tir.adapter import WriteMode, check_output, parquet_outputs
from tir_transport import DEFAULT_MODEL, ConfigurationError, TIRConnection

from ._batch_input import _INT64, _INTEGER, _check_input, _load, _Refused
from ._common import _settings_refused


def _check_output_place(output: Path, source: Path, given: str) -> None:
    if "://" in given:
        raise _Refused(
            f"the output {given} is not a local folder: tir-llama batch writes to a local "
            "folder (or one every Ray node mounts)"
        )
    here = Path(os.path.abspath(output))
    if source.is_dir() and here.resolve().is_relative_to(source.resolve()):
        raise _Refused(
            f"the output {output} is inside the input folder {source}: a later run would read "
            "the answers as input. Choose a folder outside it"
        )
    parent = here
    while not parent.exists():
        parent = parent.parent
    if parent != here and not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise _Refused(f"cannot create the output folder {output}: {parent} is not writable")


def _validate(
    args: argparse.Namespace, config: dict[str, Any]
) -> tuple[pa.Table | None, WriteMode]:
    """Every check that needs no Ray and changes nothing; returns the input and write mode."""
    source, output = Path(args.input), Path(args.output)
    mode: WriteMode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    fmt, block, names = _check_input(args)
    _check_output_place(output, source, args.output)
    if args.resume:
        if _jsonl_output(args):
            raise _Refused(RESUME_NEEDS_PARQUET)
        _check_id_column(args, names)
    check_output(output, mode)
    settings = {k: v for k, v in config.items() if k != "model"}
    model = config.get("model") or DEFAULT_MODEL
    try:
        tir = TIRConnection(**settings).tir_config(model)
    except ValidationError as e:  # a key pasted with quotes, say
        raise ConfigurationError(_settings_refused(e)) from None
    tir.require()  # every missing setting, at once
    tir.url("chat/completions", model)  # plain http to a remote host is refused here, too
    return _load(source, fmt, block, names, args), mode


RESUME_NEEDS_PARQUET = "--resume needs Parquet output (a folder not ending in .jsonl)"


def _jsonl_output(args: argparse.Namespace) -> bool:
    """Whether the output is JSON Lines (OUTPUT ends in .jsonl), which --resume cannot read."""
    return bool(args.output.rstrip("/").endswith(".jsonl"))


def _check_id_column(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse a --resume whose input has no id column (a run and --estimate alike)."""
    if args.id_column not in names:
        raise _Refused(
            f"--resume needs an id per row: the input has no column {args.id_column!r} "
            f"(it has {', '.join(map(repr, names))}); name it with --id-column"
        )


def _check_parquet_fits(table: pa.Table | None, source: str) -> None:
    """Refuse columns Parquet cannot store before paying for answers it could not write."""
    if table is None:
        return  # read from Parquet: it fits
    row = table.slice(0, 1)
    for name, kind in (
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("error", pa.string()),
    ):
        if name not in row.column_names:
            row = row.append_column(name, pa.nulls(1, kind))
    try:
        pq.write_table(row, pa.BufferOutputStream())
    except pa.ArrowException as e:
        raise _Refused(
            f"the rows of {source} cannot be written to Parquet ({' '.join(str(e).split())}): "
            "write JSON Lines instead (an OUTPUT ending in .jsonl), or leave the column out"
        ) from None


def _align_ids(table: pa.Table | None, args: argparse.Namespace) -> pa.Table | None:
    """The input's ids in the type the folder holds them in, when that changes no id.

    CSV ids are typed from the whole file: rows appended since the first run (an id `A10`
    after `1`..`9`) change the type of all of them.

    Raises:
        _Refused: an id that cannot be the folder's type (named with its row), before Ray.
    """
    if table is None or args.id_column not in table.column_names:
        return table
    files = parquet_outputs(Path(args.output), args.id_column)
    if not files:
        return table
    held = pq.read_schema(files[0]).field(args.id_column).type
    column = table.column(args.id_column)
    if column.type == held:
        return table
    values = column.to_pylist()
    if pa.types.is_integer(held) and pa.types.is_string(column.type):
        for row, value in enumerate(values, 1):
            if value is not None and not (_INTEGER.fullmatch(value) and int(value) in _INT64):
                raise _Refused(
                    f"row {row} of {args.input} has the id {value!r}, but the ids in "
                    f"{args.output} are whole numbers: a resume keeps the ids' type. Give "
                    "that row a whole-number id, or write to another folder (or --overwrite)"
                )
        aligned = pa.array([None if v is None else int(v) for v in values], pa.int64())
    elif pa.types.is_string(held) and pa.types.is_integer(column.type):
        aligned = pa.array([None if v is None else str(v) for v in values], pa.string())
    else:
        raise _Refused(
            f"the ids of {args.input} are {column.type} and those in {args.output} are {held}: "
            "a resume keeps the ids' type; write to another folder (or --overwrite)"
        )
    return table.set_column(table.column_names.index(args.id_column), args.id_column, aligned)


def _check_unique_ids(table: pa.Table | None, id_column: str) -> None:
    """Refuse ids that repeat: a later --resume could not tell their rows apart.

    (A Parquet input is not read on the driver: a resume checks its ids as it reads them.)
    """
    if table is None or id_column not in table.column_names:
        return
    counts = pc.value_counts(table.column(id_column)).to_pylist()
    repeated = [c["values"] for c in counts if c["counts"] > 1]
    if repeated:
        shown = ", ".join("(empty)" if v is None else str(v) for v in repeated[:3])
        raise _Refused(
            f"the ids in {id_column!r} are not unique ({shown} repeat): --resume could not "
            "tell their rows apart. Give every row its own id (--id-column names the column)"
        )
