"""Tiny random-init Llama-3.1, Gemma-2, Gemma-3, Qwen3 and OLMo-2 checkpoints with the real
tokenizers of their families: the engine equals the naive loop on every cell, and
`addpatch run --model DIR --no-filter` runs end to end on each (a random model adds nothing
right, so the filter would keep no pair)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    Olmo2Config,
    PretrainedConfig,
    Qwen3Config,
)
from typer.testing import CliRunner

from addpatch.engine.patching import PromptPair
from addpatch.engine.positions import layout_prompt, render_with_spans
from cli.main import app
from tests.test_engine import _compare_all_cells
from tests.test_real_tokenizers import real_tokenizer

# family -> the real tokenizer it is built with (Gemma-2 takes Gemma-3's: the same SentencePiece
# family, one digit per token; OLMo-2's tokenizer derives from cl100k)
REAL_FAMILIES = {
    "llama3_1": "llama3_1",
    "gemma2": "gemma3",
    "gemma3": "gemma3",
    "qwen3": "qwen3",
    "olmo2": "cl100k",
}
TINY = {  # the vocabulary is the real one (up to 262k tokens): everything else is tiny
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 256,
}


def real_family_config(family: str, tokenizer) -> PretrainedConfig:
    common = {
        **TINY,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "llama3_1":  # Llama-3.1's RoPE scaling and theta, grouped KV heads
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        return LlamaConfig(**common, num_key_value_heads=1, rope_parameters=rope)
    if family == "gemma2":
        return Gemma2Config(
            **common, num_key_value_heads=1, head_dim=4, sliding_window=8, query_pre_attn_scalar=4
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            **common,
            num_key_value_heads=1,
            head_dim=4,
            sliding_window=8,
            query_pre_attn_scalar=4,
            layer_types=["sliding_attention", "full_attention"],
        )
    if family == "qwen3":
        return Qwen3Config(**common, num_key_value_heads=1, head_dim=4)
    if family == "olmo2":
        return Olmo2Config(**common, num_key_value_heads=2)
    raise ValueError(family)


def build_checkpoint(family: str, out: Path, seed: int = 0) -> Path:
    """A random-init checkpoint of the family, saved with its real tokenizer (safetensors)."""
    tokenizer = real_tokenizer(REAL_FAMILIES[family])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(real_family_config(family, tokenizer)).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real-family-checkpoints")
    return {family: build_checkpoint(family, root / family) for family in REAL_FAMILIES}


TEMPLATE = "The sum of {num0} and {num1} is"
# equal addends; widths that differ between prompts (left padding); a 4-digit addend; a
# counterfactual that shares the base's first addend (cells answered from the base run)
NUMBERS = [([44, 44], [123, 9]), ([305, 1234], [305, 71])]


@pytest.mark.parametrize("family", list(REAL_FAMILIES))
def test_engine_equals_naive_loop_with_real_tokenizer(family, checkpoints):
    path = checkpoints[family]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = real_tokenizer(REAL_FAMILIES[family])
    assert model.config.vocab_size == len(tokenizer)
    pairs = [
        PromptPair(
            i,
            layout_prompt(tokenizer, *render_with_spans(TEMPLATE, base)),
            layout_prompt(tokenizer, *render_with_spans(TEMPLATE, cf)),
        )
        for i, (base, cf) in enumerate(NUMBERS)
    ]
    positions = list(pairs[0].base.canonical) + ["a1.d3", "last"]
    compared = _compare_all_cells(model, tokenizer, pairs, positions, max_new_tokens=2)
    assert compared >= len(positions) * (model.config.num_hidden_layers + 1)


@pytest.mark.parametrize("family", list(REAL_FAMILIES))
def test_run_end_to_end_unfiltered(family, checkpoints, isolated_store, tmp_path):
    path = checkpoints[family]
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(path),
            "--digits",
            "1",
            "--size",
            "4",
            "--no-filter",
            "--targets",
            "C_1",
            "--device",
            "cpu",
            "--report-dir",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "report.html").is_file()
    conn = duckdb.connect(str(isolated_store / "catalog.duckdb"), read_only=True)
    rows = conn.execute(
        "SELECT r.num_examples, r.status, r.provenance_json, m.architecture "
        "FROM runs r JOIN models m ON m.id = r.model_id"
    ).fetchall()
    conn.close()
    [(examples, status, provenance, architecture)] = rows
    assert (examples, status) == (4, "complete")
    assert json.loads(provenance)["filtered"] is False  # recorded as an unfiltered run
    assert architecture == json.loads((path / "config.json").read_text())["architectures"][0]
