"""Real pretrained weights: SmolLM2-135M-Instruct, imported once from its GGUF file
(tests/real_parts.py runs `addpatch model import-gguf` into the test cache)."""

from __future__ import annotations

import json
import sys
from functools import cache

import duckdb
import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from addpatch.engine.patching import PromptPair
from addpatch.engine.positions import layout_prompt, render_with_spans
from addpatch.models.loading import ResolvedModel, load_tokenizer
from addpatch.models.smollm2_wheel import GGUF_SHA256 as SMOLLM2_GGUF_SHA256
from cli.main import app, main
from tests.real_parts import smollm2_checkpoint, smollm2_gguf
from tests.test_engine import _compare_all_cells


@cache
def smollm2():
    path = smollm2_checkpoint()
    tokenizer = load_tokenizer(ResolvedModel(path.name, path, None))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, model, tokenizer


def test_imported_checkpoint_has_its_card_and_plain_weights():
    path, model, _ = smollm2()
    card = json.loads((path / "card.json").read_text())
    assert card["source_sha256"] == SMOLLM2_GGUF_SHA256
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # a plain checkpoint, loadable without gguf
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.gguf"))


def test_engine_equals_naive_loop_on_real_weights():
    _, model, tokenizer = smollm2()
    template = "The sum of {num0} and {num1} is"
    numbers = [([3, 4], [8, 1]), ([6, 6], [6, 2])]
    pairs = [
        PromptPair(
            i,
            layout_prompt(tokenizer, *render_with_spans(template, base)),
            layout_prompt(tokenizer, *render_with_spans(template, cf)),
        )
        for i, (base, cf) in enumerate(numbers)
    ]
    # every layer (-1..29) at the first addend's digit and the last token: the naive loop costs
    # two full forwards of 135M parameters per cell (~0.9 s on one thread), so the grid's
    # columns are the ones that matter; the tiny real-tokenizer checkpoints cover every position
    positions = ["a0.d0", "last"]
    compared = _compare_all_cells(model, tokenizer, pairs, positions, max_new_tokens=2)
    assert compared == len(pairs) * len(positions) * (model.config.num_hidden_layers + 1)


def _assert_run_completes_on_the_kept_pairs(args: list[str], store) -> None:
    """`addpatch ARGS` exits 0, keeps some pairs and patches exactly those: a complete run."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    [(examples, status)] = conn.execute("SELECT num_examples, status FROM runs").fetchall()
    [(kept,)] = conn.execute(
        "SELECT count(*) FROM filter_results WHERE base_correct AND cf_correct"
    ).fetchall()
    conn.close()
    assert status == "complete" and examples == kept > 0


def test_run_with_worked_examples_keeps_pairs_and_completes(isolated_store, tmp_path):
    path, _, _ = smollm2()
    args = ["run", "--model", str(path), "--digits", "1", "--size", "16", "--shots", "3"]
    args += ["--layers", "0,10,20,29", "--positions", "last", "--device", "cpu"]
    args += ["--report-dir", str(tmp_path / "report")]
    _assert_run_completes_on_the_kept_pairs(args, isolated_store)
    assert (tmp_path / "report" / "report.html").is_file()


def test_chat_run_with_worked_examples_as_turns_keeps_pairs_and_completes(isolated_store):
    # under --chat the worked examples are turns of their own (a user turn asking, an assistant
    # turn answering 'The answer is N'), and the answer prefix starts the query's reply, so the
    # Instruct model goes on with the number. Measured: 3/12 pairs kept here (3/16 with three
    # worked examples, at twice the cost); with the default template and no answer prefix this
    # model keeps 1/64 (it answers 'The sum of ...' or a wrong number), see docs/models.md
    path, _, _ = smollm2()
    args = ["run", "--model", str(path), "--digits", "1", "--size", "12", "--chat"]
    args += ["--shots", "2", "--template", "What is {num0} + {num1}?"]
    args += ["--answer-prefix", "The answer is"]
    args += ["--layers", "0", "--positions", "last", "--device", "cpu", "--interventions-only"]
    _assert_run_completes_on_the_kept_pairs(args, isolated_store)
    conn = duckdb.connect(str(isolated_store / "catalog.duckdb"), read_only=True)
    [(chat, shots, turns, answer_prefix)] = conn.execute(
        "SELECT chat, num_shots, shot_turns, answer_prefix FROM datasets"
    ).fetchall()
    conn.close()
    assert (chat, shots, turns, answer_prefix) == (True, 2, True, "The answer is")


def _import_gguf(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`addpatch model import-gguf ARGS` in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["addpatch", "model", "import-gguf", *args])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("bad", ["missing", "not-gguf"])
def test_import_gguf_refuses_bad_input(bad, tmp_path, monkeypatch, capsys):
    source = tmp_path / "model.gguf"
    if bad == "not-gguf":
        source.write_bytes(b"PK\x03\x04 not a gguf file")
    out = tmp_path / "out"
    code, err = _import_gguf(monkeypatch, capsys, str(source), str(out))
    assert code == 1
    assert err.count("Error:") == 1 and ("not a file" if bad == "missing" else "GGUF") in err
    assert not out.exists()


def test_import_gguf_refuses_a_non_empty_destination(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _import_gguf(monkeypatch, capsys, str(smollm2_gguf()), str(out))
    assert code == 1 and err.count("Error:") == 1 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
