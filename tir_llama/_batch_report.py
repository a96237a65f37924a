"""`batch`'s words to a person: progress as rows come, the usage totals, a duration."""

from __future__ import annotations

import time
from typing import Any, TextIO

from tir_transport import Usage


def _line(what: str, totals: dict[str, Any]) -> str:
    tokens: Usage = totals["usage"]
    text = (
        f"{what}: {totals['rows']} rows, {totals['rows_with_error']} with an error; "
        f"{tokens.input_tokens} input + {tokens.output_tokens} output = "
        f"{tokens.total_tokens} tokens"
    )
    if len(totals.get("per_model", {})) > 1:
        text += (
            " ("
            + ", ".join(
                f"{model}: {u.total_tokens}" for model, u in sorted(totals["per_model"].items())
            )
            + ")"
        )
    if totals["rows_without_usage"]:
        text += f" ({totals['rows_without_usage']} answered rows reported no usage: not counted)"
    return text


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"


class _Progress:
    """Rows answered, said as they come: one line redrawn on a terminal, else a line a while."""

    # When not on a terminal (a log file, CI): a line at the first batch, then at most this often.
    EVERY_SECONDS = 10.0

    def __init__(self, total: int, err: TextIO) -> None:
        self.total, self.err = total, err
        self.tty = err.isatty()
        self.rows = self.errors = self.tokens = 0
        self.started = time.monotonic()
        self.said: float | None = None

    def __call__(self, rows: int, errors: int, input_tokens: int, output_tokens: int) -> None:
        self.rows += rows
        self.errors += errors
        self.tokens += input_tokens + output_tokens
        now = time.monotonic()
        if self.tty:
            print(f"\r{self.line(now)}\x1b[K", end="", file=self.err, flush=True)
        elif self.said is None or now - self.said >= self.EVERY_SECONDS or self.rows >= self.total:
            print(self.line(now), file=self.err, flush=True)
            self.said = now

    def line(self, now: float) -> str:
        """Rows of the total, rows/s, errors, tokens and the time left at this pace."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows / elapsed
        share = f" ({100 * self.rows // self.total}%)" if self.total else ""
        left = (
            f", {_clock((self.total - self.rows) / rate)} left"
            if rate and self.rows < self.total
            else ""
        )
        return (
            f"{self.rows:,}/{self.total:,} rows{share}, {rate:.1f} rows/s, "
            f"{self.errors:,} with an error, {self.tokens:,} tokens{left}"
        )

    def done(self) -> None:
        """End the redrawn line (on a terminal)."""
        if self.tty and self.rows:
            print(file=self.err, flush=True)
