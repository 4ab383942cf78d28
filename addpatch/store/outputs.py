"""Writing patched outputs as Parquet files (and other store files) that appear atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from addpatch.models.weights import sha256_file
from addpatch.store.output_schema import RUN_ID_FIELD


def output_relpath(model_id: int, run_id: int, batch_index: int) -> str:
    """Hive-style partitions by model and run; one file per batch of examples."""
    return f"outputs/model={model_id}/run={run_id}/batch-{batch_index:05d}.parquet"


def write_output_file(root: Path, relpath: str, run_id: int, table: pa.Table) -> tuple[int, str]:
    """Write `table` (with a run_id column added) to root/relpath atomically; rows and sha256."""
    table = table.add_column(
        0, RUN_ID_FIELD, pa.array([run_id] * table.num_rows, RUN_ID_FIELD.type)
    )
    sha = write_atomically(
        root, relpath, lambda tmp: pq.write_table(table, tmp, compression="zstd")
    )
    return table.num_rows, sha


def write_atomically(root: Path, relpath: str, write: Callable[[Path], None]) -> str:
    """`write` a file under the store's tmp/, sync it, then rename it to root/relpath (it
    appears whole or not at all, replacing an earlier copy); its sha256."""
    final = root / relpath
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = root / "tmp"
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / f"{final.name}.{os.getpid()}.tmp"
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return sha256_file(final)
