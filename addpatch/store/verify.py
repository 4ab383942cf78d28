"""Check that the catalog and the Parquet files agree, and clean up what no run owns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from addpatch.models.weights import sha256_file
from addpatch.store.store import Store


@dataclass
class Verification:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # registered, not on disk
    corrupt: list[str] = field(default_factory=list)  # unreadable, wrong row count or hash
    orphans: list[str] = field(default_factory=list)  # on disk, registered by no run
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans)


def verify_store(store: Store, *, repair: bool = False, check_hashes: bool = True) -> Verification:
    """Every registered file exists with its row count (and hash); files nobody owns are orphans.

    With `repair`, orphans and leftovers in tmp/ are deleted; registered files are never touched.
    """
    result = Verification()
    with store.connect(read_only=True) as conn:
        registered = conn.execute(
            "SELECT path, rows, sha256 FROM output_files ORDER BY id"
        ).fetchall()
    known = {path for path, _, _ in registered}
    for path, rows, sha in registered:
        result.checked += 1
        full = store.root / path
        if not full.exists():
            result.missing.append(path)
            continue
        try:
            actual_rows = pq.ParquetFile(full).metadata.num_rows
        except Exception:
            result.corrupt.append(path)
            continue
        if actual_rows != rows or (check_hashes and sha256_file(full) != sha):
            result.corrupt.append(path)
    on_disk = (
        [p for p in store.outputs_dir.rglob("*") if p.is_file()]
        if store.outputs_dir.exists()
        else []
    )
    leftovers = [p for p in store.tmp_dir.iterdir()] if store.tmp_dir.exists() else []
    for file in on_disk:
        relative = file.relative_to(store.root).as_posix()
        if relative not in known:
            result.orphans.append(relative)
    result.orphans += [p.relative_to(store.root).as_posix() for p in leftovers]
    if repair:
        for relative in result.orphans:
            Path(store.root / relative).unlink(missing_ok=True)
            result.removed.append(relative)
    return result
