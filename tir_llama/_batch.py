"""`tir-llama batch INPUT OUTPUT` on Ray (its arguments are parsed in tir_llama.cli).

Everything that can be checked without Ray is checked before Ray starts, and said in one
line: the input (exists, a known format, UTF-8, the columns), the output folder (not a file,
not inside the input, its rows and the decision `--resume` / `--overwrite` they need), the
settings.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import json
import os
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
import ray.data

from ray_tir import CHAT_COLUMNS, OutputFolderError, chat, usage, write_output
from ray_tir._bulk import check_columns
from ray_tir._output import WriteMode, check_output, done_ids, without_done
from tir_transport import DEFAULT_MODEL, TIRConnection, Usage

__all__ = ["run"]

# pyarrow reads CSV in blocks of 1 MiB by default, and a row longer than a block fails
# ("straddling object straddles two block boundaries"); blocks grow with the longest line.
_MIN_BLOCK = 1 << 20


class _Refused(Exception):
    """A bad input or output, said in one line (exit status 2)."""


def _format(path: Path, given: str) -> str:
    if "://" in given:
        raise _Refused(f"the input {given} is not a local file: copy it here first")
    if not path.exists():
        raise _Refused(f"the input {path} does not exist")
    if path.is_dir():
        if not any(path.glob("*.parquet")):
            raise _Refused(f"the input folder {path} holds no .parquet files")
        return "parquet"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "json"
    if suffix == ".parquet":
        return "parquet"
    raise _Refused(f"cannot tell the format of {path}: use .csv, .jsonl or .parquet")


def _scan_text(path: Path) -> int:
    """Check that the file is UTF-8 (before any row is paid for); return its longest line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    longest = line = offset = 0
    with path.open("rb") as f:
        while chunk := f.read(_MIN_BLOCK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise _Refused(
                    f"{path} is not UTF-8 text (byte {chunk[e.start]:#x} at offset "
                    f"{offset + e.start}): save it as UTF-8, e.g. "
                    f"iconv -f latin1 -t utf-8 '{path}' > utf8.{path.suffix.lstrip('.')}"
                ) from None
            parts = chunk.split(b"\n")
            for part in parts[:-1]:
                longest, line = max(longest, line + len(part)), 0
            line += len(parts[-1])
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _Refused(f"{path} is not UTF-8 text (it ends inside a character)") from None
    return max(longest, line)


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        first = path if path.is_file() else sorted(path.glob("*.parquet"))[0]
        try:
            return list(pq.read_schema(first).names)
        except (OSError, pa.ArrowException) as e:
            raise _Refused(f"{first} cannot be read as Parquet: {e}") from None
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is no column name.
    with path.open(encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            header = next(csv.reader(f), None)
            if not header:
                raise _Refused(f"{path} is empty: it needs a header line and rows")
            return header
        for text in f:
            if text.strip():
                try:
                    record = json.loads(text)
                except ValueError as e:
                    raise _Refused(f"{path}: the first line is not JSON ({e})") from None
                if not isinstance(record, dict):
                    raise _Refused(f"{path}: each line must be a JSON object")
                return list(record)
    raise _Refused(f"{path} is empty: it holds no rows")


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


def _read(path: Path, fmt: str, block_size: int, prompt_column: str) -> ray.data.Dataset:
    if fmt == "csv":
        return ray.data.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(block_size=block_size),
            # A column of numbers is still a column of prompts.
            convert_options=pacsv.ConvertOptions(column_types={prompt_column: pa.string()}),
        )
    if fmt == "json":
        # Ray reads JSON Lines line by line (no blocks to outgrow).
        return ray.data.read_json(str(path), lines=True)
    return ray.data.read_parquet(str(path))


def _line(what: str, totals: dict[str, Any]) -> str:
    tokens: Usage = totals["usage"]
    text = (
        f"{what}: {totals['rows']} rows, {totals['rows_with_error']} with an error; "
        f"{tokens.input_tokens} input + {tokens.output_tokens} output = "
        f"{tokens.total_tokens} tokens"
    )
    if totals["rows_without_usage"]:
        text += f" ({totals['rows_without_usage']} answered rows reported no usage: not counted)"
    return text


def _validate(
    args: argparse.Namespace, config: dict[str, Any]
) -> tuple[str, int, WriteMode, set[Any]]:
    """Every check that needs no Ray.

    Returns the input format, block size, write mode and (resuming) the ids already answered.
    """
    source, output = Path(args.input), Path(args.output)
    mode: WriteMode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    fmt = _format(source, args.input)
    block = max(_MIN_BLOCK, 2 * _scan_text(source) + 1) if fmt != "parquet" else _MIN_BLOCK
    names = _columns(source, fmt)
    try:
        check_columns(names, args.prompt_column, CHAT_COLUMNS, "--prompt-column")
    except ValueError as e:
        raise _Refused(str(e)) from None
    _check_output_place(output, source, args.output)
    done: set[Any] = set()
    if args.resume:
        if args.output.rstrip("/").endswith(".jsonl"):
            raise _Refused("--resume needs Parquet output (a folder not ending in .jsonl)")
        if args.id_column not in names:
            raise _Refused(
                f"--resume needs an id per row: the input has no column {args.id_column!r} "
                f"(it has {', '.join(map(repr, names))}); name it with --id-column"
            )
        # The folder is readable and has that column; its ids are read once, here.
        done = done_ids(output, args.id_column)
    check_output(output, mode)
    settings = {k: v for k, v in config.items() if k != "model"}
    model = config.get("model") or DEFAULT_MODEL
    tir = TIRConnection(**settings).tir_config(model)
    tir.require()  # every missing setting, at once
    tir.url("chat/completions", model)  # plain http to a remote host is refused here, too
    return fmt, block, mode, done


def run(args: argparse.Namespace, config: dict[str, Any], out: TextIO) -> int:
    """Run the job: check, read, answer every (pending) row, write, print the usage."""
    try:
        fmt, block, mode, done = _validate(args, config)
    except (_Refused, ValueError) as e:  # ConfigurationError and OutputFolderError included
        print(f"error: {e}", file=out)
        return 2
    if not ray.is_initialized():
        # RAY_ADDRESS names a cluster; without it, a local Ray instance is started.
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    ds = _read(Path(args.input), fmt, block, args.prompt_column)
    if args.resume:
        try:
            ds = without_done(ds, done, args.id_column)
        except ValueError as e:  # duplicate or missing ids: nothing has been sent
            print(f"error: {e}", file=out)
            return 2
    request = {
        name: value
        for name, value in {
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "top_p": args.top_p,
            "seed": args.seed,
        }.items()
        if value is not None
    }
    result = chat(
        ds,
        prompt_column=args.prompt_column,
        system=args.system,
        concurrency=args.concurrency,
        max_in_flight=args.max_in_flight,
        requests_per_minute=args.rpm,
        **config,
        **request,
    )
    try:
        written = write_output(result, args.output, mode=mode)
    except OutputFolderError as e:  # e.g. --overwrite with no rows: nothing replaced
        print(f"error: {e}", file=out)
        return 2
    print(_line("this run", usage(written)), file=out)
    print(_line(f"{args.output} holds", usage(args.output)), file=out)
    return 0
