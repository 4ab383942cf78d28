"""A registered output file damaged after its run (another schema, fewer rows, garbage, another
run's rows, gone) is never read as if it were whole: `score`, `report`, `query`, `sql` and
`shell` refuse in one line naming the file and `addpatch store verify`, and change nothing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from addpatch.errors import StoreError
from addpatch.store.read_check import check_outputs, reads_outputs
from addpatch.store.store import Store
from cli.main import app
from tests.store_files import store_snapshot

RUN = [
    "run", "--size", "12", "--batch-size", "4", "--layers", "-1,0", "--positions", "digits",
    "--interventions-only",
]  # fmt: skip


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def run_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("read-check") / "store"
    result = _invoke(*RUN, "--store", str(store))
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture(autouse=True)
def no_shell(monkeypatch) -> None:
    """`addpatch shell` execs the DuckDB shell in place of this process: fail instead."""

    def opened(*args: object) -> None:
        raise AssertionError("the DuckDB shell was opened on a damaged store")

    monkeypatch.setattr("os.execv", opened)


@pytest.fixture
def store_copy(run_store, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_store, copy)
    return copy


def _another_schema(path: Path) -> None:
    """A valid Parquet file, as many rows, other columns (a file copied in from elsewhere)."""
    table = pq.read_table(path)
    other = table.drop_columns(["answer", "text"]).append_column(
        "label", pa.array(["x"] * table.num_rows)
    )
    pq.write_table(other, path)


def _fewer_rows(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows // 2), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 not really parquet at all")


def _another_run(path: Path) -> None:
    """The same columns and rows, but labelled as another run's (an old copy restored)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("run_id")
    relabelled = pc.add(table.column("run_id"), pa.scalar(1, pa.int32()))
    pq.write_table(table.set_column(index, table.schema.field(index), relabelled), path)


def _deleted(path: Path) -> None:
    path.unlink()


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "schema": (_another_schema, "has a column 'label' that outputs do not have"),
    "fewer-rows": (_fewer_rows, "rows, the catalog registered"),
    "garbage": (_garbage, "is not a readable Parquet file"),
    "another-run": (_another_run, "holds rows of run 2, it is registered for run 1"),
    "deleted": (_deleted, "is missing"),
}

COMMANDS = {
    "score": ["score", "--targets", "C_1"],
    "report": ["report", "--run-id", "1"],
    "query": ["query", "iia_by_cell", "-p", "run_id=1", "-p", "targets=C_1"],
}
OTHER_READS = {  # each on one damage: the check is the same call
    "score-default-targets": ["score"],
    "query-every-run": ["query", "best_cells"],
    "sql": ["sql", "SELECT count(*) FROM patched_outputs"],
    "shell": ["shell"],
}


def _batch(store: Path) -> Path:
    return sorted((store / "outputs").rglob("batch-*.parquet"))[1]


def _refused(store: Path, damage: str, args: list[str]) -> None:
    damage_file, problem = DAMAGES[damage]
    batch = _batch(store)
    damage_file(batch)
    before = store_snapshot(store)
    result = _invoke(*args, "--store", str(store))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert batch.relative_to(store).as_posix() in lines[0]
    assert problem in lines[0] and "addpatch store verify" in lines[0]
    assert "Traceback" not in result.output
    assert store_snapshot(store) == before


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_is_refused_in_one_line_and_nothing_changes(store_copy, damage, command):
    _refused(store_copy, damage, COMMANDS[command])


@pytest.mark.parametrize("command", list(OTHER_READS))
def test_every_other_read_refuses_a_damaged_file(store_copy, command):
    _refused(store_copy, "fewer-rows", OTHER_READS[command])


def test_store_verify_finds_what_reading_refused(store_copy):
    _another_schema(_batch(store_copy))
    result = _invoke("store", "verify", "--store", str(store_copy))
    assert result.exit_code == 1 and "1 corrupt" in result.stderr, result.output


def test_a_whole_store_reads_and_the_check_reads_no_data(run_store, monkeypatch):
    check_outputs(Store.open(run_store))  # whole: no error
    assert _invoke("score", "--targets", "C_1", "--store", str(run_store)).exit_code == 0

    def no_full_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("the read check read a whole file")

    monkeypatch.setattr(pq, "read_table", no_full_reads)
    monkeypatch.setattr(pq.ParquetFile, "read", no_full_reads)
    check_outputs(Store.open(run_store))


def test_only_the_runs_read_are_checked(store_copy):
    _garbage(_batch(store_copy))
    store = Store.open(store_copy)
    check_outputs(store, [2])  # no file of run 2: nothing to refuse
    with pytest.raises(StoreError, match="addpatch store verify"):
        check_outputs(store, [1])


def test_catalog_only_statements_need_no_check(store_copy):
    _garbage(_batch(store_copy))
    assert not reads_outputs("SELECT * FROM output_files")
    assert reads_outputs("select * from PATCHED_OUTPUTS") and reads_outputs("FROM iia_cells(1)")
    listed = _invoke("sql", "SELECT path FROM output_files", "--store", str(store_copy))
    assert listed.exit_code == 0, listed.output  # the user can still look at the catalog
