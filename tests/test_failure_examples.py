"""The failures a user or a cluster produced from outside, each as a test: one `Error:` line that
names the fix, nothing written by a failing command, and recovery paths that work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.store_files import store_snapshot

RUN = [
    "run", "--size", "16", "--batch-size", "4", "--layers", "-1,0", "--positions", "digits",
    "--interventions-only",
]  # fmt: skip


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_error(result, code: int = 1) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _rows(store: Path) -> list[tuple]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        return conn.execute(
            "SELECT example_id, layer, position, token_ids, text, answer FROM patched_outputs "
            "ORDER BY example_id, layer, position"
        ).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def run_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("examples") / "store"
    result = _invoke(*RUN, "--store", str(store))
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture
def store_copy(run_store, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_store, copy)
    return copy


# -- usage errors and markup -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["run", "--bogus-option"], "No such option: --bogus-option"),
        (["bogus-command"], "No such command 'bogus-command'"),
        (["run", "--digits", "abc"], "--digits"),
        (["run", "--size", "٣x"], "--size"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, text):
    assert text in _one_error(_invoke(*args), code=2)


def test_user_text_is_never_read_as_markup(run_store):
    line = _one_error(_invoke("score", "--targets", "C_9[/]", "--store", str(run_store)))
    assert "C_9[/]" in line
    line = _one_error(_invoke("score", "--store", "/x/[red]nostore"))
    assert "/x/[red]nostore" in line


def test_ray_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    line = _one_error(
        _invoke("sweep", "--models", "tiny-adder-digits", "--ray", "--store", str(tmp_path / "s"))
    )
    assert "pip install 'addpatch[ray]'" in line
    assert not (tmp_path / "s").exists()


# -- numbers and paths are checked before writing ---------------------------------------------
@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["run", "--seed", "2147483648"], "--seed must be 0..2,147,483,647"),
        (["run", "--batch-size", "99999999999999999999"], "--batch-size must be 1..16,384"),
        (["run", "--threads", "-1"], "--threads must be"),
        (["run", "--device", "meta"], "unknown device 'meta'"),
        (["run", "--size", "1000000000"], "--size must be 1..100,000"),
        (["sweep", "--models", "tiny-adder-digits", "--seed", "-5"], "--seed must be"),
        (["dataset", "--size", "1000000000", "--no-filter"], "--size must be 1..100,000"),
    ],
)
def test_numbers_out_of_range_are_refused_before_the_store_exists(args, text, tmp_path):
    store = tmp_path / "s"
    assert text in _one_error(_invoke(*args, "--store", str(store)))
    assert not store.exists()


def test_output_paths_are_checked_before_writing(store_copy, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    before = store_snapshot(store_copy)
    store = ["--store", str(store_copy)]
    assert "is a file" in _one_error(_invoke("report", "--out", str(a_file), *store))
    assert "does not exist" in _one_error(
        _invoke("score", "-f", "csv", "-o", str(tmp_path / "missing" / "x.csv"), *store)
    )
    assert "is a directory" in _one_error(
        _invoke("query", "keep_rates", "-o", str(tmp_path), *store)
    )
    assert "is a file" in _one_error(_invoke("run", "--report-dir", str(a_file), *store))
    assert "is a file" in _one_error(
        _invoke("model", "train-tiny", "--out", str(a_file), "--steps", "1")
    )
    assert store_snapshot(store_copy) == before


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["score", "--top", "0"], "--top must be 1.."),
        (["score", "--targets", ""], "--targets is empty"),
        (["sql", ""], "the SQL is empty"),
        (["query", "best_cells", "-p", "run_id="], "parameter run_id must be integer"),
        (["query", "best_cells", "-p", "targets="], "parameter targets is empty"),
    ],
)
def test_small_bad_inputs(store_copy, args, text):
    before = store_snapshot(store_copy)
    assert text in _one_error(_invoke(*args, "--store", str(store_copy)))
    assert store_snapshot(store_copy) == before


def test_train_tiny_refuses_a_negative_step_count(tmp_path):
    assert "--steps must be" in _one_error(
        _invoke("model", "train-tiny", "--steps", "-1", "--out", str(tmp_path / "m"))
    )
    assert not (tmp_path / "m").exists()


# -- the model is checked before the store is touched -----------------------------------------
def _shipped_copy(tmp_path: Path) -> Path:
    from addpatch.models.loading import shipped_models

    target = tmp_path / "model"
    shutil.copytree(shipped_models()["tiny-adder-digits"], target)
    return target


def _lying_layers(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = 5  # over 3-layer weights
    (model / "config.json").write_text(json.dumps(config))


def _invalid_json(model: Path) -> None:
    (model / "config.json").write_text('{"model_type": "llama",')


def _no_tokenizer(model: Path) -> None:
    (model / "tokenizer.json").unlink()
    (model / "tokenizer_config.json").unlink()


def _truncated(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _custom_code(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "my-adder"
    config["auto_map"] = {
        "AutoConfig": "modeling_adder.AdderConfig",
        "AutoModelForCausalLM": "modeling_adder.Adder",
    }
    (model / "config.json").write_text(json.dumps(config))


def _bert(model: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    tokenizer_files = {p.name: p.read_bytes() for p in model.glob("tokenizer*")}
    shutil.rmtree(model)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(model)
    for name, data in tokenizer_files.items():
        (model / name).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "text"),
    [
        (_lying_layers, "config.json and weights disagree"),
        (_invalid_json, "cannot read"),
        (_no_tokenizer, "tokenizer"),
        (_truncated, "not a readable safetensors file"),
        (_custom_code, "--trust-remote-code"),
        (_bert, "not a decoder"),
    ],
    ids=["lying-config", "invalid-json", "no-tokenizer", "truncated", "custom-code", "bert"],
)
def test_a_checkpoint_that_cannot_be_trusted_is_refused_before_the_store(damage, text, tmp_path):
    model = _shipped_copy(tmp_path)
    damage(model)
    store = tmp_path / "s"
    line = _one_error(_invoke("run", "--model", str(model), "--size", "8", "--store", str(store)))
    assert text in line
    assert "trust_remote_code=True" not in line
    assert not store.exists()


# -- SQL and store paths -----------------------------------------------------------------------
def test_a_store_path_with_an_apostrophe_works(tmp_path):
    store = tmp_path / "o'brien" / "store"
    result = _invoke("dataset", "--size", "8", "--no-filter", "--store", str(store))
    assert result.exit_code == 0, result.output
    status = _invoke("store", "status", "--store", str(store))
    assert status.exit_code == 0, status.output


def test_sql_cannot_write_files(store_copy):
    batch = next((store_copy / "outputs").rglob("*.parquet"))
    before = store_snapshot(store_copy)
    for statement in (
        f"COPY (SELECT 1 AS x) TO '{batch}' (FORMAT parquet)",
        f"EXPORT DATABASE '{store_copy / 'exported'}'",
        f"ATTACH '{store_copy / 'other.duckdb'}'",
        "SELECT 1; SELECT 2",
    ):
        line = _one_error(_invoke("sql", statement, "--store", str(store_copy)))
        assert "read-only" in line or "one SQL statement" in line
    assert store_snapshot(store_copy) == before


def test_a_valid_empty_catalog_is_never_deleted(tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    duckdb.connect(str(store / "catalog.duckdb")).close()  # a DuckDB file with no table
    before = store_snapshot(store)
    for command in (["score"], ["run", "--size", "8"]):
        assert "not an addpatch catalog" in _one_error(_invoke(*command, "--store", str(store)))
    assert store_snapshot(store) == before


def test_an_interrupted_creation_is_finished_by_the_next_writer(tmp_path):
    from addpatch.store.store import CREATING_MARKER, Store, head_revision

    store = tmp_path / "s"
    store.mkdir()
    duckdb.connect(str(store / "catalog.duckdb")).close()  # what a killed creation leaves
    (store / CREATING_MARKER).write_text("addpatch pid 1\n")
    assert "being created" in _one_error(_invoke("score", "--store", str(store)))
    assert Store.open(store, create=True).revision() == head_revision()
    assert not (store / CREATING_MARKER).exists()


# -- recovery: verify's message is the path that works ----------------------------------------
def _batches(store: Path) -> list[Path]:
    return sorted((store / "outputs").rglob("batch-*.parquet"))


def test_a_deleted_batch_is_recomputed_by_the_rerun(run_store, store_copy):
    expected = _rows(run_store)
    _batches(store_copy)[1].unlink()
    line = _one_error(_invoke("store", "verify", "--store", str(store_copy)))
    assert "1 missing" in line and "--repair" in line and "rerun" in line
    rerun = _invoke(*RUN, "--store", str(store_copy))
    assert rerun.exit_code == 0, rerun.output
    assert "nothing recomputed" not in rerun.output
    assert _rows(store_copy) == expected
    assert _invoke("store", "verify", "--store", str(store_copy)).exit_code == 0


def test_a_corrupt_batch_is_recomputed_after_verify_repair(run_store, store_copy):
    expected = _rows(run_store)
    _batches(store_copy)[2].write_bytes(b"not parquet")
    assert "1 corrupt" in _one_error(_invoke("store", "verify", "--store", str(store_copy)))
    repaired = _invoke("store", "verify", "--repair", "--store", str(store_copy))
    assert repaired.exit_code == 0, repaired.output
    assert "Unregistered 1 damaged files" in repaired.output
    rerun = _invoke(*RUN, "--store", str(store_copy))
    assert rerun.exit_code == 0, rerun.output
    assert _rows(store_copy) == expected
    assert "Store is consistent" in _invoke("store", "verify", "--store", str(store_copy)).output


def test_duplicated_rows_are_found_even_when_the_catalog_was_updated_to_match(
    run_store, store_copy
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from addpatch.models.weights import sha256_file

    expected = _rows(run_store)
    batch = _batches(store_copy)[0]
    table = pq.read_table(batch)
    pq.write_table(pa.concat_tables([table, table.slice(0, 5)]), batch)
    conn = duckdb.connect(str(store_copy / "catalog.duckdb"))
    conn.execute(
        "UPDATE output_files SET rows = ?, sha256 = ? WHERE path = ?",
        [table.num_rows + 5, sha256_file(batch), batch.relative_to(store_copy).as_posix()],
    )
    conn.close()
    line = _one_error(_invoke("store", "verify", "--store", str(store_copy)))
    assert "1 corrupt" in line or "1 with duplicated rows" in line
    assert _invoke("store", "verify", "--repair", "--store", str(store_copy)).exit_code == 0
    assert _invoke(*RUN, "--store", str(store_copy)).exit_code == 0
    assert _rows(store_copy) == expected
    assert _invoke("store", "verify", "--store", str(store_copy)).exit_code == 0


def test_duplicates_across_files_are_found(store_copy):
    from addpatch.store.store import Store
    from addpatch.store.verify import verify_store

    first, second = _batches(store_copy)[:2]
    shutil.copyfile(first, second)  # same rows twice, each file matching its own count
    conn = duckdb.connect(str(store_copy / "catalog.duckdb"))
    from addpatch.models.weights import sha256_file

    conn.execute(
        "UPDATE output_files SET sha256 = ? WHERE path = ?",
        [sha256_file(second), second.relative_to(store_copy).as_posix()],
    )
    conn.close()
    result = verify_store(Store.open(store_copy))
    assert sorted(result.duplicated) == sorted(
        p.relative_to(store_copy).as_posix() for p in (first, second)
    )


def test_report_targets_leaves_no_previous_heatmaps(store_copy, tmp_path):
    out = tmp_path / "report"
    store = ["--store", str(store_copy)]
    assert _invoke("report", "--targets", "C_1,O_1", "--out", str(out), *store).exit_code == 0
    assert _invoke("report", "--targets", "C_1", "--out", str(out), *store).exit_code == 0
    assert sorted(p.name for p in out.glob("heatmap_*")) == ["heatmap_C_1.png", "heatmap_C_1.svg"]


# -- other processes ---------------------------------------------------------------------------
def test_a_wait_on_another_process_lock_is_announced_at_once(store_copy):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
            " time.sleep(3)",
            str(store_copy / "catalog.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = _invoke("store", "status", "--store", str(store_copy))
    finally:
        holder.wait(timeout=60)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("waiting for python") and f"pid {holder.pid}" in first


def test_two_writers_creating_one_store_never_crash(tmp_path):
    addpatch = str(Path(sys.executable).parent / "addpatch")
    store = tmp_path / "s"
    command = [addpatch, "dataset", "--size", "8", "--no-filter", "--store", str(store)]
    writers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(w.wait(timeout=300), w.stderr.read()) for w in writers]
    for code, err in outcomes:
        assert code == 0 or (code == 1 and "is being written by addpatch pid" in err), err
        assert "Traceback" not in err and "OperationalError" not in err
    assert any(code == 0 for code, _ in outcomes)
    assert _invoke("store", "status", "--store", str(store)).exit_code == 0


def test_a_bug_is_one_line_naming_its_traceback_file_or_shown_when_debugging(
    store_copy, monkeypatch
):
    from addpatch.store import status

    def broken(store):
        raise ValueError("simulated bug")

    monkeypatch.setattr(status, "store_status", broken)
    line = _one_error(_invoke("store", "status", "--store", str(store_copy)))
    assert "unexpected ValueError: simulated bug (a bug in addpatch" in line
    written = Path(line.split("its traceback is in ")[1].split(";")[0])
    assert "simulated bug" in written.read_text() and "Traceback" in written.read_text()
    monkeypatch.setenv("ADDPATCH_DEBUG", "1")
    shown = _invoke("store", "status", "--store", str(store_copy))
    assert isinstance(shown.exception, ValueError)


def test_a_sweep_refuses_a_lying_checkpoint_before_the_store(tmp_path):
    model = _shipped_copy(tmp_path)
    _lying_layers(model)
    store = tmp_path / "s"
    line = _one_error(
        _invoke("sweep", "--models", str(model), "--size", "8", "--store", str(store))
    )
    assert "config.json and weights disagree" in line and "5" in line
    assert not store.exists()
