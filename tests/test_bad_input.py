"""Bad input of every kind, through the CLI as a user types it: one line `Error: ...` that
names the fix, exit code 1 (2 for usage errors), and the store left byte-for-byte unchanged.

In-process with typer's CliRunner (the error boundary sits in the app's top-level group, so the
runner sees the exit code and stderr a user sees); one case goes through the installed
`addpatch` console script as a real process, to prove the two agree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.store_files import store_snapshot

ADDPATCH = str(Path(sys.executable).parent / "addpatch")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "store"
    done = CliRunner().invoke(
        app, ["run", "--size", "12", "--store", str(root), "--targets", "C_1"]
    )
    assert done.exit_code == 0, done.output
    return root


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    empty = base / "empty"
    empty.mkdir()
    no_weights = base / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "llama"}')
    return {"empty": empty, "no_weights": no_weights}


# (arguments, expected text in the one error line). {empty}/{no_weights} are model dirs.
CASES = [
    (["run", "--digits", "0"], "num_digits must be 1..6"),
    (["run", "--digits", "7"], "num_digits must be 1..6"),
    (["run", "--addends", "1"], "num_addends must be 2..4"),
    (["run", "--addends", "5"], "num_addends must be 2..4"),
    (["run", "--size", "0"], "--size must be 1.."),
    (["run", "--batch-size", "0"], "--batch-size must be 1.."),
    (["run", "--kind", "bogus"], "unknown generator"),
    (["run", "--model", "no-such-model"], "is not a shipped model"),
    (["run", "--model", "org/not-in-the-cache"], "download it first"),
    (["run", "--model", "{empty}"], "has no config.json"),
    (["run", "--model", "{no_weights}"], "safetensors"),
    (["run", "--targets", "C_9"], "unknown variable 'C_9'"),
    (["run", "--targets", "digit_0_0<-"], "malformed term"),
    (["run", "--targets", "C_1+output_digit_0"], "mixes basic-model variable"),
    (["run", "--layers", "99"], "is outside -1.."),
    (["run", "--layers", "abc"], "cannot read layers"),
    (["run", "--positions", "a7.t0"], "unknown position 'a7.t0'"),
    (["run", "--dtype", "float8"], "unknown dtype"),
    (["run", "--device", "tpu"], "unknown device"),
    (["run", "--device", "cuda"], "no GPU is visible"),
    (["dataset", "--kind", "sum_to_nine", "-o", "column=9"], "column must be"),
    (["dataset", "-o", "noequals"], "write --option name=value"),
    (["dataset", "-o", "bogus=1"], "has no option 'bogus'"),
    (["score", "--targets", "C_9"], "unknown variable"),
    (["score", "--run-id", "99"], "no run 99"),
    (["query", "nope"], "unknown query 'nope'"),
    (["query", "best_cells", "-p", "run_id=abc"], "must be integer"),
    (["query", "best_cells", "-p", "run_id=1; DROP TABLE runs"], "must be integer"),
    (["query", "best_cells", "-p", "bogus=1"], "has no parameter 'bogus'"),
    (["query", "best_cells", "-p", "noequals"], "write --param name=value"),
    (["query", "best_cells", "--format", "xml"], "unknown format"),
    (["query", "best_cells", "--format", "parquet"], "add --output"),
    (["sql", "DROP TABLE runs"], "runs read-only queries"),
    (["sql", "SELEC 1"], "the SQL failed"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_leaves_the_store_unchanged(store, model_dirs, args, message):
    args = [a.format(**model_dirs) for a in args]
    before = store_snapshot(store)
    result = CliRunner().invoke(app, [*args, "--store", str(store)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert store_snapshot(store) == before


def test_installed_console_script_gives_the_same_one_line_error(store, tmp_path):
    """The one real process of this file: the installed `addpatch` script, a fresh interpreter
    (import-time warnings, logging handlers bound to the real stderr, the exit code Python
    returns), on a case that reads the model's config before it fails."""
    before = store_snapshot(store)
    result = subprocess.run(
        [ADDPATCH, "run", "--layers", "99", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "is outside -1.." in lines[0]
    assert store_snapshot(store) == before


def _copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    return copy


def _one_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    return lines[0]


def test_corrupt_parquet_file_names_verify(store, tmp_path):
    copy = _copy(store, tmp_path)
    damaged = next((copy / "outputs").rglob("*.parquet"))
    damaged.write_bytes(b"not parquet")
    before = store_snapshot(copy)
    line = _one_error(["score", "--targets", "C_1", "--store", str(copy)])
    assert "addpatch store verify" in line
    assert store_snapshot(copy) == before


def test_store_at_another_revision_is_refused(store, tmp_path):
    copy = _copy(store, tmp_path)
    conn = duckdb.connect(str(copy / "catalog.duckdb"))
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    before = store_snapshot(copy)
    line = _one_error(["score", "--store", str(copy)])
    assert "upgrade addpatch" in line
    assert store_snapshot(copy) == before


def test_read_only_store_directory(store, tmp_path):
    copy = _copy(store, tmp_path)
    before = store_snapshot(copy)
    subprocess.run(["chattr", "-R", "+i", str(copy)], check=True)  # read-only, even for root
    try:
        line = _one_error(["run", "--size", "12", "--store", str(copy)])
        assert "read-only" in line and "writable --store" in line
    finally:
        subprocess.run(["chattr", "-R", "-i", str(copy)], check=True)
    assert store_snapshot(copy) == before


def test_tokenizer_that_cannot_place_a_digit(store, tmp_path):
    """A fast tokenizer that drops digits: no token holds them, so no digit position exists."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    from addpatch.models.tiny_tokenizers import build_tokenizer

    tokenizer = build_tokenizer("digits")
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace(Regex(r"\d"), "")
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    model_dir = tmp_path / "digit-blind"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    before = store_snapshot(store)
    line = _one_error(["run", "--model", str(model_dir), "--store", str(store)])
    assert "gives no token for digit" in line
    assert store_snapshot(store) == before
