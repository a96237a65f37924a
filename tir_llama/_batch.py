"""`tir-llama batch INPUT OUTPUT` on Ray (its arguments are parsed in tir_llama._parser).

Everything that can be checked without Ray is checked before Ray starts, and said in one
line: the input (exists, a known format, UTF-8, the columns, every line parsed, the ids), the
output folder (not a file, not inside the input, its rows and the decision `--resume` /
`--overwrite` they need), the settings. CSV and JSON Lines are read on the driver, so
that a bad line is named by its number and ids keep the form they have in the file.

Exit statuses: 0 every row answered; 1 the job failed part way (a write error, a failure
nobody foresaw); 2 refused before any request; 3 done, but some rows carry an error (resume
to send them again); 4 stopped early on an error every row would hit (the key, the model).

Here: `run` and `estimate`. `_batch_input` reads and checks the input, `_batch_checks` the
output folder, the settings and the ids, `_batch_ray` starts Ray (and reaps its processes),
`_batch_report` says the progress and the totals.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from ray_tir import JobStopped, OutputWriteError, chat, usage, write_output
from ray_tir.adapter import done_ids, folder_lock, without_done
from tir_transport import (
    DEFAULT_MODEL,
    ApproximateTokenCountWarning,
    context_window,
    count_message_tokens,
    tokenizer_for,
)
from tir_transport.adapter import TOKENS_EXTRA_HINT

from ._batch_checks import (
    RESUME_NEEDS_PARQUET,
    _align_ids,
    _check_id_column,
    _check_parquet_fits,
    _check_unique_ids,
    _jsonl_output,
    _validate,
)
from ._batch_input import _check_input, _columns, _load, _Refused
from ._batch_ray import _cause, _start_ray
from ._batch_report import _clock, _line, _Progress
from ._words import shell_words

__all__ = ["estimate", "run"]


EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_ROWS_FAILED, EXIT_STOPPED = 0, 1, 2, 3, 4


def _dataset(table: pa.Table | None, path: Path, concurrency: int) -> ray.data.Dataset:
    if table is None:
        return ray.data.read_parquet(str(path))  # typed: its ids keep their type
    # Blocks small enough that every actor gets work, large enough not to flood Ray.
    size = min(4096, max(64, -(-table.num_rows // (4 * max(concurrency, 1)))))
    return ray.data.from_arrow(
        [table.slice(start, size) for start in range(0, max(table.num_rows, 1), size)]
    )


def _ids(table: pa.Table | None, args: argparse.Namespace) -> list[Any]:
    if table is None:
        return list(pq.read_table(args.input, columns=[args.id_column]).column(0).to_pylist())
    return list(table.column(args.id_column).to_pylist())


def _rows(table: pa.Table | None, path: Path) -> int:
    if table is not None:
        return int(table.num_rows)
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _again(table: pa.Table | None, args: argparse.Namespace, rows: str = "them again") -> str:
    """How to send failed (or unsent) rows again, for this run's input and output."""
    if _jsonl_output(args):
        return f"{RESUME_NEEDS_PARQUET}: run again to send every row"
    names = table.column_names if table is not None else _columns(Path(args.input), "parquet")
    if args.id_column in names:
        return f"--resume sends {rows}"
    return (
        f"the input has no id column ({args.id_column!r}), so --resume cannot tell which "
        "rows they are: run again to send every row, or give the rows ids (--id-column)"
    )


def run(args: argparse.Namespace, config: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """Run the job: check, read, answer every (pending) row, write, print the usage.

    Progress and errors go to `err`, the summary to `out`.
    """
    started = time.monotonic()
    try:
        table, mode = _validate(args, config)
        total = _rows(table, Path(args.input))
        if total == 0:
            raise _Refused(
                f"{args.input} holds no rows: nothing was sent, and nothing in {args.output} "
                "was written or replaced"
            )
        _check_unique_ids(table, args.id_column)
        if not _jsonl_output(args):
            _check_parquet_fits(table, args.input)
        if args.resume:
            table = _align_ids(table, args)
            done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
            if done:
                total = sum(1 for i in _ids(table, args) if i not in done)
    except (_Refused, ValueError) as e:  # ConfigurationError and OutputFolderError included
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    if total == 0:
        # Answered without Ray: starting it takes longer than reading the folder.
        holds = usage(args.output)
        print(f"nothing to do: every row of {args.input} is in {args.output}", file=out)
        print(_line(f"{args.output} holds", holds), file=out)
        return EXIT_ROWS_FAILED if holds["rows_with_error"] else EXIT_OK
    print(f"{total:,} rows to answer; starting Ray", file=err, flush=True)
    if not ray.is_initialized():
        _start_ray(args.verbose)
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
    progress = _Progress(total, err)
    try:
        # One job per folder, from the first read of the folder to the last file written.
        with folder_lock(args.output):
            ds = _dataset(table, Path(args.input), args.concurrency)
            if args.resume:
                done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
                ds = without_done(ds, done, args.id_column)
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
            written = write_output(
                result,
                args.output,
                mode=mode,
                keep_failed=args.keep_failed,
                source=str(Path(args.input).resolve()),
                progress=progress,
            )
    except ValueError as e:  # OutputFolderError (the folder, the lock, the settings), ids
        progress.done()
        print(f"error: {e}", file=err)
        return EXIT_REFUSED
    except JobStopped as e:
        progress.done()
        print(
            f"error: the job stopped early: {e}. Rows answered before it are written; once "
            f"it is fixed, {_again(table, args)}",
            file=err,
        )
        return EXIT_STOPPED
    except OutputWriteError as e:
        progress.done()
        print(f"error: {e}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        progress.done()
        print(
            f"stopped: the rows answered before Ctrl-C are written in {args.output}; "
            f"{_again(table, args, 'the others')}",
            file=err,
        )
        raise
    except Exception as e:
        progress.done()
        # Ray wraps a failure in its own (a task error: the cause's frames, in colour); the
        # command's one line names the cause.
        cause = _cause(e)
        if cause is e:
            raise
        raise cause from e
    progress.done()
    print(f"{_line('this run', usage(written))}; {_clock(time.monotonic() - started)}", file=out)
    holds = usage(args.output)
    print(_line(f"{args.output} holds", holds), file=out)
    if holds["rows_with_error"]:
        print(f"{holds['rows_with_error']:,} rows carry an error: {_again(table, args)}", file=err)
        return EXIT_ROWS_FAILED
    return EXIT_OK


def _prompts(table: pa.Table | None, args: argparse.Namespace) -> list[Any]:
    if table is None:
        return list(pq.read_table(args.input, columns=[args.prompt_column]).column(0).to_pylist())
    return list(table.column(args.prompt_column).to_pylist())


def estimate(args: argparse.Namespace, config: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """`--estimate`: rows, prompt tokens, an output bound and a cost bound; nothing is sent.

    Prompt tokens are counted as vLLM counts them (the chat template and Llama's tokenizer,
    offline, with the `[tokens]` extra; approximately without it). With `--resume` and an
    OUTPUT, only the rows it does not hold yet are counted.
    """
    model = config.get("model") or DEFAULT_MODEL
    try:
        fmt, block, names = _check_input(args)
        if args.resume:
            _check_id_column(args, names)
        table = _load(Path(args.input), fmt, block, names, args)
        # The checks a run makes of the input, so that an estimate that passes is one a run
        # takes (and counts the rows a resume would send, ids read as the folder holds them).
        _check_unique_ids(table, args.id_column)
        prompts = _prompts(table, args)
        if args.resume and args.output and Path(args.output).is_dir():
            table = _align_ids(table, args)
            done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
            prompts = [p for p, i in zip(prompts, _ids(table, args), strict=True) if i not in done]
    except (_Refused, ValueError) as e:
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    exact = tokenizer_for(model).exact
    system = [{"role": "system", "content": args.system}] if args.system else []
    sent = [p for p in prompts if isinstance(p, str) and p.strip()]
    with warnings.catch_warnings():
        # Said once below, in the command's words.
        warnings.simplefilter("ignore", ApproximateTokenCountWarning)
        counts = [
            count_message_tokens(model, [*system, {"role": "user", "content": p}]) for p in sent
        ]
    input_tokens = sum(counts)
    skipped = len(prompts) - len(sent)
    dropped = f" ({skipped:,} with an empty prompt: not sent, they carry an error)"
    print(f"rows:          {len(prompts):,}{dropped if skipped else ''}", file=out)
    how = (
        "exact, Llama's tokenizer and chat template"
        if exact
        else f"approximate: {TOKENS_EXTRA_HINT} for exact counts, offline"
    )
    print(f"input tokens:  {input_tokens:,} ({how}; model {model})", file=out)
    window = context_window(model)
    if args.max_tokens is not None:
        output_bound: int | None = len(sent) * args.max_tokens
        print(
            f"output tokens: at most {output_bound:,} ({len(sent):,} rows x --max-tokens "
            f"{args.max_tokens:,})",
            file=out,
        )
    elif window:
        # Without --max-tokens an answer may fill what the window leaves after its prompt.
        output_bound = sum(max(window - c, 0) for c in counts)
        print(
            f"output tokens: at most {output_bound:,} (no --max-tokens: each answer may fill "
            f"the {window:,}-token window after its prompt; set --max-tokens for a useful bound)",
            file=out,
        )
    else:
        output_bound = None
        print(
            "output tokens: no bound (no --max-tokens, and the model's window is not known)",
            file=out,
        )
    if args.input_price is not None or args.output_price is not None:
        price_in, price_out = args.input_price or 0.0, args.output_price or 0.0
        if output_bound is None and price_out:
            print("cost:          no bound: set --max-tokens", file=out)
        else:
            cost = input_tokens * price_in / 1e6 + (output_bound or 0) * price_out / 1e6
            print(
                f"cost:          at most {cost:,.4f} ({input_tokens:,} x {price_in:g} + "
                f"{output_bound or 0:,} x {price_out:g} per million tokens)",
                file=out,
            )
    print("nothing was sent (--estimate)", file=err)
    return EXIT_OK
