"""What tir-llama's own CLI (`tir_llama`) needs from `ray_tir`, beyond its user API.

For tir-llama's own adapters and CLI; not a user API; may change between minor versions.
User code imports from `ray_tir` itself. The packages above import from here or from
`ray_tir`, never from its private modules (`ray_tir._*`); ruff's banned-api rule (TID251,
pyproject.toml) holds them to it.

- `check_columns`: the rows fit the job (input column there, output columns not yet).
- the output folder, checked and read before Ray starts: `WriteMode`, `check_output`,
  `parquet_outputs`, `done_ids`, `without_done`, and `folder_lock` (one job per folder).
"""

from ._folder import WriteMode  # noqa: TID251
from ._lock import folder_lock  # noqa: TID251
from ._pending import check_output, done_ids, parquet_outputs, without_done  # noqa: TID251
from ._workers import check_columns  # noqa: TID251

__all__ = [
    "WriteMode",
    "check_columns",
    "check_output",
    "done_ids",
    "folder_lock",
    "parquet_outputs",
    "without_done",
]
