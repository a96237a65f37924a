"""A planned bulk job: its actors over the rows, run into a folder, ended before it returns."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.data

from ._folder import Format, OutputWriteError, Progress  # noqa: TID251
from ._sink import Sink  # noqa: TID251
from ._workers import JobStopped, _Worker  # noqa: TID251

__all__ = ["ACTORS_END_SECONDS", "job_of"]


# Ray Data tasks (blocks) an actor runs at once, and is given at once. With one, a block's
# last batches drain the actor's request slots before the next block starts (issue 31: slots
# 86-92% busy at 32 in flight); with two, the next block's batches wait at the actor's own
# bound (BATCHES_AT_ONCE) and take the slots the tail gives back. Rows in the actor's hands
# stay BATCHES_AT_ONCE batches. Given no more than it runs, an actor that started first does
# not take blocks that a later one would answer at once (given more, the first actor of a
# small job took them all).
BLOCKS_AT_ONCE = 2


# Ray Data restarts an actor whose process died and retries its batches (max_restarts and
# max_task_retries are -1 for actor pools by default): no row is lost.
def _actors(concurrency: int) -> ray.data.ActorPoolStrategy:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    return ray.data.ActorPoolStrategy(
        size=concurrency,
        max_concurrent_calls_per_actor=BLOCKS_AT_ONCE,
        max_tasks_in_flight_per_actor=BLOCKS_AT_ONCE,
    )


@dataclass
class _Job:
    """What `chat` or `embed` will run, kept so that `write_output` can run it into a folder."""

    source: ray.data.Dataset
    worker: type[_Worker]
    kwargs: dict[str, Any]
    batch_size: int
    concurrency: int
    num_cpus: float
    settings: dict[str, Any] = field(default_factory=dict)

    def plan(self, sink: Sink | None) -> ray.data.Dataset:
        return self.source.map_batches(
            self.worker,
            fn_constructor_kwargs={**self.kwargs, "sink": sink},
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=_actors(self.concurrency),
            num_cpus=self.num_cpus,
        )

    def run(
        self, folder: Path, fmt: Format, run: str, progress: Progress | None = None
    ) -> list[str]:
        """Run the job, its actors writing into `folder`; return the files written.

        `progress`, if given, is called on the driver once per batch written, with that
        batch's rows, rows with an error, input tokens and output tokens.

        Raises:
            JobStopped: an error every row would hit; the job stops at the first report.
            OutputWriteError: a file could not be written; the job stops there.
        """
        names: list[str] = []
        batches = iter(
            self.plan(Sink(folder, fmt, run)).iter_batches(batch_format="pyarrow", batch_size=None)
        )
        answered = False
        try:
            for batch in batches:
                table: pa.Table = batch
                report: dict[str, list[Any]] = table.to_pydict()
                names += [name for name in report["file"] if name]
                if progress is not None:
                    for counts in zip(
                        report["rows"],
                        report["errors"],
                        report["input_tokens"],
                        report["output_tokens"],
                        strict=True,
                    ):
                        if counts[0]:
                            progress(*counts)
                for stopped, failed in zip(report["stopped"], report["failed"], strict=True):
                    if failed:
                        raise OutputWriteError(failed)
                    if stopped:
                        raise JobStopped(stopped)
            answered = True
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops Ray Data's executor, and with it the actors
            if not answered:  # actors may still hold requests: none is sent after we return
                _await_actors_end(self.worker.__name__)
        # A batch Ray ran again (its actor died) was written twice: the copy no task
        # reported is the dead attempt's.
        for path in folder.glob(f"part-{run}-*"):
            if path.name not in names:
                path.unlink()
        return names


# How long a job's end waits for its actors to be gone (Ray ends them within a second or
# two; a machine under load can take longer, and past this the job returns anyway).
ACTORS_END_SECONDS = 15.0


def _await_actors_end(class_name: str) -> None:
    """Return once this driver's actors of `class_name` are dead (or after a bound).

    Ray Data's executor asks Ray to kill its actors and returns at once; until each is gone
    it can still send what it held and write a file into the folder. A job that returns
    before its last batch (stopped early, or failed) must not: a resume started at once
    would pay twice for those rows, and find files it did not expect. Ray's actor table is
    read from its GCS (Ray's public state API needs the dashboard, which the command does
    not start); Ray is pinned, and if that table cannot be read the job returns without
    waiting, as before.
    """
    try:
        from ray._private import state  # imported here: Ray's own GCS view, read only on a stop

        job = ray.get_runtime_context().get_job_id()
        deadline = time.monotonic() + ACTORS_END_SECONDS
        while time.monotonic() < deadline:
            alive = [
                actor
                for actor in state.actors().values()
                if actor.get("ActorClassName") == class_name
                and actor.get("JobID") == job
                and actor.get("State") != "DEAD"
            ]
            if not alive:
                return
            time.sleep(0.05)
    except Exception:  # a view of Ray's internals: never fail a job on it
        return


_jobs: weakref.WeakKeyDictionary[ray.data.Dataset, _Job] = weakref.WeakKeyDictionary()


def job_of(ds: ray.data.Dataset) -> _Job | None:
    """The job `ds` is the answer of (`chat` or `embed`), or None for any other Dataset."""
    return _jobs.get(ds)


def _start(job: _Job) -> ray.data.Dataset:
    ds = job.plan(None)
    _jobs[ds] = job
    return ds
