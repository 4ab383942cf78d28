"""Check that the catalog and the Parquet files agree, and repair what can be recomputed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from addpatch.models.weights import sha256_file
from addpatch.store.catalog import transaction
from addpatch.store.outputs_view import refresh_outputs_view
from addpatch.store.read_check import damaged_outputs, registered_files
from addpatch.store.store import Store


@dataclass
class Verification:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # registered, not on disk
    corrupt: list[str] = field(default_factory=list)  # unreadable, wrong row count or hash
    duplicated: list[str] = field(default_factory=list)  # holds an (example, layer, position) twice
    orphans: list[str] = field(default_factory=list)  # on disk, registered by no run
    removed: list[str] = field(default_factory=list)  # orphans deleted by --repair
    unregistered: list[str] = field(default_factory=list)  # damaged files --repair unregistered

    @property
    def damaged(self) -> list[str]:
        return [*self.missing, *self.corrupt, *self.duplicated]

    @property
    def ok(self) -> bool:
        remaining = [p for p in self.damaged if p not in self.unregistered]
        return not (remaining or [p for p in self.orphans if p not in self.removed])


def verify_store(store: Store, *, repair: bool = False, check_hashes: bool = True) -> Verification:
    """Every registered file exists with the rows its batch must hold (and its hash), no
    (example, layer, position) is stored twice; files nobody owns are orphans.

    With `repair` (holding the writer lock, so never while a run writes): orphans and leftovers
    in tmp/ are deleted, and damaged registered files are unregistered (moved to damaged/), so
    that rerunning their run recomputes exactly those batches.
    """
    if repair:
        with store.writer():  # a running writer's written-but-unregistered files are not orphans
            return _verify(store, repair=True, check_hashes=check_hashes)
    return _verify(store, repair=False, check_hashes=check_hashes)


def _expected_rows(store: Store) -> dict[tuple[int, int], int]:
    """(run, batch) -> rows its file must hold: the batch's examples x layers x positions."""
    with store.connect(read_only=True) as conn:
        runs = conn.execute(
            "SELECT r.id, r.num_examples, r.batch_size, r.num_batches, r.layers_json, "
            "(SELECT count(*) FROM run_positions p WHERE p.run_id = r.id), r.provenance_json, "
            "(SELECT count(*) FROM screened_cells s WHERE s.run_id = r.id) FROM runs r"
        ).fetchall()
    expected = {}
    for run_id, examples, batch_size, batches, layers_json, positions, provenance, screened in runs:
        record = json.loads(provenance)
        if record.get("components", ["resid"]) != ["resid"] or screened:
            continue  # cells per example depend on the heads, or on the screen: not checked
        if record.get("method") == "das":  # a file per subspace: its held-out examples
            for index in range(int(batches)):
                expected[(int(run_id), index)] = int(examples)
            continue
        cells = len(json.loads(layers_json)) * int(positions)
        for index in range(int(batches)):
            in_batch = min(batch_size, examples - index * batch_size)
            expected[(int(run_id), index)] = max(in_batch, 0) * cells
    return expected


def _verify(store: Store, *, repair: bool, check_hashes: bool) -> Verification:
    result = Verification()
    with store.connect(read_only=True) as conn:
        registered = conn.execute(
            "SELECT path, rows, sha256, run_id, batch_index FROM output_files ORDER BY id"
        ).fetchall()
    expected = _expected_rows(store)
    known = {path for path, *_ in registered}
    readable = []
    for path, rows, sha, run_id, batch_index in registered:
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
        must_hold = expected.get((run_id, batch_index), rows)
        if actual_rows != rows or actual_rows != must_hold:
            result.corrupt.append(path)
        elif check_hashes and sha256_file(full) != sha:
            result.corrupt.append(path)
        else:
            readable.append(path)
    result.duplicated = _files_with_duplicates(store, readable)
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
        if result.damaged:
            _unregister(store, result.damaged)
            result.unregistered = list(result.damaged)
    return result


def _files_with_duplicates(store: Store, paths: list[str]) -> list[str]:
    """Registered files holding a (run, example, layer, position, component, head, subspace)
    that is stored more than once (files written before components have neither: NULL; a
    full-vector run's files have no subspace: NULL)."""
    if not paths:
        return []
    with store.connect(read_only=True) as conn:
        # files written before components lack both columns: a typed empty row set has them
        rows = conn.execute(
            "SELECT DISTINCT unnest(files) FROM ("
            "  SELECT list(filename) AS files FROM ("
            "    (SELECT NULL::INTEGER AS run_id, NULL::BIGINT AS example_id,"
            "      NULL::SMALLINT AS layer, NULL::SMALLINT AS position, NULL::VARCHAR AS component,"
            "      NULL::SMALLINT AS head, NULL::INTEGER AS subspace_id,"
            "      NULL::VARCHAR AS filename LIMIT 0)"
            "    UNION ALL BY NAME"
            "    (SELECT * FROM read_parquet(?, filename = true, union_by_name = true)))"
            "  GROUP BY run_id, example_id, layer, position, component, head, subspace_id"
            "  HAVING count(*) > 1)",
            [[str(store.root.resolve() / p) for p in paths]],
        ).fetchall()
    root = store.root.resolve()
    return sorted(Path(r[0]).relative_to(root).as_posix() for r in rows)


def unreadable_files(store: Store, run_id: int) -> list[str]:
    """The run's registered files that are missing, unreadable, hold other than their rows or
    not the output columns (each file's footer, no hashing: `addpatch.store.read_check`)."""
    with store.connect(read_only=True) as conn:
        registered = registered_files(conn, [run_id])
    return [path for path, _ in damaged_outputs(store.root, registered)]


def unregister_files(store: Store, paths: list[str]) -> None:
    """Forget damaged files (moved to damaged/) and mark their runs incomplete, so that
    rerunning a run recomputes exactly those batches."""
    with store.writer():
        _unregister(store, paths)


def _unregister(store: Store, paths: list[str]) -> None:
    damaged_dir = store.root / "damaged"
    for relative in paths:
        full = store.root / relative
        if full.exists():
            target = damaged_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            full.replace(target)
    with store.connect() as conn, transaction(conn):
        conn.execute(  # a trained subspace goes with its outputs: the cell is trained again
            "DELETE FROM subspaces WHERE (run_id, subspace_id) IN "
            "(SELECT (run_id, batch_index) FROM output_files WHERE list_contains(?, path))",
            [paths],
        )
        conn.execute(
            "UPDATE runs SET status = 'running' WHERE id IN "
            "(SELECT run_id FROM output_files WHERE list_contains(?, path))",
            [paths],
        )
        conn.execute("DELETE FROM output_files WHERE list_contains(?, path)", [paths])
        refresh_outputs_view(conn)
