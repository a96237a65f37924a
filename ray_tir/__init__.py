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

from ._bulk import CHAT_COLUMNS, EMBED_COLUMNS, JobStopped, chat, embed  # noqa: TID251
from ._output import OutputFolderError, OutputWriteError, pending, usage, write_output  # noqa: TID251

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
