"""Bulk inference on TIR over Ray Data datasets (`pip install "tir-llama[ray]"`).

`chat(ds, ...)` and `embed(ds, ...)` take a `ray.data.Dataset` and return one whose rows keep
their columns and gain the answer (or the vector) and an `error` column; `requests_per_minute`
holds for the whole job, on every node; `write_output(ds, folder, mode=...)` runs a job into a
folder without paying twice (`pending(ds, folder, id_column=...)` gives the rows still to do).
"""

try:
    import ray.data  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError('ray_tir needs Ray Data: pip install "tir-llama[ray]"') from e

from tir_transport import Usage, track_usage

# The parts, each importing only the ones listed before it: `_folder` (the output folder's
# names and errors, which files hold rows); `_lock` (one job per folder), `_sink` (a file
# written whole; where actors write), `_pacing` (the job's pacer actor); `_settings` (the job's
# recorded settings), `_pending` (what the folder holds, the ids done, the rows pending),
# `_workers` (the actors); `_usage` (what a job cost), `_job` (a planned job, run into a
# folder); `_output` (`write_output`), `_bulk` (`chat`, `embed`).
from ._bulk import chat, embed  # noqa: TID251
from ._folder import OutputFolderError, OutputWriteError  # noqa: TID251
from ._output import write_output  # noqa: TID251
from ._pending import pending  # noqa: TID251
from ._usage import usage  # noqa: TID251
from ._workers import CHAT_COLUMNS, EMBED_COLUMNS, JobStopped  # noqa: TID251

__all__ = [
    "CHAT_COLUMNS",
    "EMBED_COLUMNS",
    "JobStopped",
    "OutputFolderError",
    "OutputWriteError",
    "Usage",
    "chat",
    "embed",
    "pending",
    "track_usage",
    "usage",
    "write_output",
]
