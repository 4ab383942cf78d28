"""A checkpoint whose tensors disagree with its config.json (width, vocabulary, a missing or an
extra tensor) is refused from the safetensors headers alone, before anything is written; every
checkpoint transformers loads cleanly passes (tied embeddings, shards, renamed keys)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig
from typer.testing import CliRunner

from addpatch.errors import BadInput
from addpatch.experiment.preflight import (
    _meta_model,
    check_weight_files,
    check_weights_match_config,
)
from addpatch.models.loading import load_model, resolve_model, shipped_models
from addpatch.store.store import Store
from cli.main import app
from tests.conftest import FAMILIES, tiny_model

MISMATCH = "the weights do not match config.json"


def _check(path: Path) -> None:
    """The header check alone (the config is read as transformers reads it, not refused)."""
    resolved = resolve_model(str(path))
    model = _meta_model(resolved, AutoConfig.from_pretrained(resolved.path))
    check_weights_match_config(resolved, model, check_weight_files(resolved))


def _save(family: str, folder: Path, **kwargs: object) -> Path:
    model, tokenizer = tiny_model(family)
    model.save_pretrained(folder, **kwargs)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_shipped_models_pass(name):
    _check(shipped_models()[name])


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_random_models_pass(family, tmp_path):
    _check(_save(family, tmp_path / family))


def test_a_sharded_checkpoint_passes_and_a_missing_shard_is_named(tmp_path):
    folder = _save("qwen3", tmp_path / "sharded", max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").exists()
    _check(folder)
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(Exception, match=f"names {shard.name}"):
        _check(folder)


def test_a_base_model_checkpoint_without_the_prefix_passes(tmp_path):
    folder = _save("gpt2", tmp_path / "gpt2")  # GPT-2's own files: h.0..., not transformer.h.0
    weights = load_file(folder / "model.safetensors")
    bare = {k.removeprefix("transformer."): v for k, v in weights.items()}
    save_file(bare, folder / "model.safetensors", metadata={"format": "pt"})
    _check(folder)


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _edit_weights(folder: Path, drop: str | None = None, add: str | None = None) -> None:
    weights = load_file(folder / "model.safetensors")
    if drop:
        del weights[drop]
    if add:
        weights[add] = torch.zeros(3)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _wider(folder: Path) -> None:
    _edit_config(folder, hidden_size=64)  # over 32-wide tensors


def _more_words(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, vocab_size=config["vocab_size"] + 5)


def _missing(folder: Path) -> None:
    _edit_weights(folder, drop="model.layers.1.mlp.up_proj.weight")


def _extra(folder: Path) -> None:
    _edit_weights(folder, add="model.extra.weight")


def _untied(folder: Path) -> None:
    _edit_config(folder, tie_word_embeddings=True)
    _edit_weights(folder, drop="lm_head.weight")
    _edit_config(folder, tie_word_embeddings=False)  # lm_head is in neither place


@pytest.mark.parametrize(
    ("damage", "text"),
    [
        (_wider, "model.embed_tokens.weight is [21, 32] in the weights, [21, 64] by config.json"),
        (_more_words, "model.embed_tokens.weight is [21, 32] in the weights, [26, 32]"),
        (_missing, "model.layers.1.mlp.up_proj.weight is not in the weights"),
        (_extra, "model.extra.weight is in the weights but not in the model"),
        (_untied, "lm_head.weight is not in the weights"),
    ],
    ids=["wider", "vocab", "missing", "extra", "untied"],
)
def test_a_mismatch_is_refused_where_loading_would_refuse_it(damage, text, tmp_path):
    folder = _save("llama", tmp_path / "model")
    damage(folder)
    with pytest.raises(BadInput, match=MISMATCH) as refused:
        _check(folder)
    assert text in str(refused.value)
    # loading (a path that skipped the preflight) refuses it with the same one line
    with pytest.raises(BadInput, match=MISMATCH) as loading:
        load_model(resolve_model(str(folder)), torch.device("cpu"), torch.float32)
    assert text in str(loading.value) and "\n" not in str(loading.value)


def _tables(store: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        names = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall() for n in names}
    finally:
        conn.close()


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
def test_a_sweep_with_a_mismatched_checkpoint_is_refused_before_any_row(existing, tmp_path):
    bad = tmp_path / "narrow"
    shutil.copytree(shipped_models()["tiny-adder-digits"], bad)
    _edit_config(bad, hidden_size=32)  # over 64-wide tensors
    store = tmp_path / "s"
    if existing:
        Store.open(store, create=True)
        before = _tables(store)
    result = CliRunner().invoke(
        app,
        ["sweep", "--models", f"tiny-adder-digits,{bad}", "--digits", "2", "--size", "8"]
        + ["--store", str(store)],
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: narrow: " + MISMATCH), result.stderr
    assert "[21, 64] in the weights, [21, 32] by config.json" in lines[0]
    assert "belong together" in lines[0]
    if existing:
        assert _tables(store) == before
    else:
        assert not store.exists()


def test_a_run_with_a_mismatched_checkpoint_is_refused_before_the_store(tmp_path):
    bad = tmp_path / "narrow"
    shutil.copytree(shipped_models()["tiny-adder-digits"], bad)
    _edit_config(bad, vocab_size=30)
    store = tmp_path / "s"
    result = CliRunner().invoke(
        app, ["run", "--model", str(bad), "--size", "8", "--store", str(store)]
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert MISMATCH in lines[0] and "[30, 64] by config.json" in lines[0]
    assert not store.exists()


def test_a_gemma3_multimodal_checkpoint_runs(tmp_path):
    """Gemma-3 4B and up are saved as Gemma3ForConditionalGeneration, the class
    AutoModelForCausalLM builds for them: accepted (a BERT-style architecture still is not)."""
    folder = _save("gemma3_multimodal", tmp_path / "gemma3-mm")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    store = tmp_path / "s"
    result = CliRunner().invoke(
        app,
        ["run", "--model", str(folder), "--digits", "1", "--size", "4", "--no-filter"]
        + ["--layers", "0", "--positions", "last", "--interventions-only", "--store", str(store)],
    )
    assert result.exit_code == 0, result.output
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    [(status, examples)] = conn.execute("SELECT status, num_examples FROM runs").fetchall()
    conn.close()
    assert (status, examples) == ("complete", 4)
