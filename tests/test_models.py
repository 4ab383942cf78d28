"""The shipped tiny adders: loaded through the public loading path, they really add."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from addpatch.engine.patching import PatchEngine
from addpatch.engine.positions import layout_input
from addpatch.errors import ModelNotFound
from addpatch.models.loading import (
    load_model,
    model_record,
    resolve_model,
    shipped_card,
    shipped_models,
)
from addpatch.models.train_tiny import TrainConfig, train_tiny_adder
from addpatch.models.weights import sha256_file
from addpatch.task.addition import AdditionTask
from addpatch.task.templates import parse_answer

SHIPPED = sorted(shipped_models())


def test_the_default_model_is_shipped():
    assert "tiny-adder-digits" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_adds_on_200_prompts_per_width(name):
    resolved = resolve_model(name)
    card = json.loads((resolved.path / "card.json").read_text())
    model, tokenizer = load_model(resolved, torch.device("cpu"), torch.float32)
    engine = PatchEngine(model, tokenizer)
    rng = random.Random(2024)
    for width in card["train_config"]["eval_widths"]:
        task = AdditionTask(num_addends=2, num_digits=width)
        inputs = [
            task.make_input([rng.randint(10 ** (width - 1), 10**width - 1) for _ in range(2)])
            for _ in range(200)
        ]
        answers = engine.generate(
            [layout_input(engine.tokenizer, i) for i in inputs], max_new_tokens=width + 3
        )
        correct = sum(
            parse_answer(text) == i.total for (_, text), i in zip(answers, inputs, strict=True)
        )
        assert correct / len(inputs) >= 0.99, (name, width, correct)


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_matches_the_weights(name):
    resolved = resolve_model(name)
    card = json.loads((resolved.path / "card.json").read_text())
    model, _ = load_model(resolved, torch.device("cpu"), torch.float32)
    assert card["weights_sha256"] == sha256_file(resolved.path / "model.safetensors")
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["steps_run"] == card["train_config"]["steps"]
    assert all(acc >= 0.99 for acc in card["accuracy_by_digits"].values())
    assert card["wall_time_s"] > 0
    record = model_record(resolved, model.config)
    assert record.architecture == "LlamaForCausalLM"
    assert not list(resolved.path.glob("*.bin")) and not list(resolved.path.glob("*.pkl"))
    start = card["train_config"].get("init_from")
    if start is not None:  # a curriculum: it started from exactly the shipped weights it names
        assert card["init_weights_sha256"] == shipped_card(start)["weights_sha256"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_is_what_its_recipe_trains(name):
    from addpatch.models.recipes import RECIPES

    # fields a card predates take their defaults, which change nothing in the training
    trained = {**dataclasses.asdict(TrainConfig()), **shipped_card(name)["train_config"]}
    recipe = dataclasses.asdict(RECIPES[name])
    assert json.loads(json.dumps(trained)) == json.loads(json.dumps(recipe))


def test_shipped_models_stay_under_20_mb():
    total = sum(p.stat().st_size for name in SHIPPED for p in shipped_models()[name].iterdir())
    assert total < 20 * 1024 * 1024


def _small_training(**changes) -> TrainConfig:
    """A one-layer, 16-wide adder that trains a few steps in well under a second."""
    small = dict(hidden_size=16, ffn_size=32, num_layers=1, batch_size=16, eval_size=10, threads=1)
    return dataclasses.replace(TrainConfig(), **{**small, **changes})


def test_same_seed_gives_identical_weights(tmp_path):
    config = _small_training(steps=50, eval_every=1000)
    first = train_tiny_adder(config, tmp_path / "a", steps=3)
    second = train_tiny_adder(config, tmp_path / "b", steps=3)
    assert first["weights_sha256"] == second["weights_sha256"]
    other = train_tiny_adder(dataclasses.replace(config, seed=1), tmp_path / "c", steps=3)
    assert other["weights_sha256"] != first["weights_sha256"]


def test_unknown_model_names_the_ways_to_get_one(tmp_path):
    with pytest.raises(ModelNotFound, match="shipped model"):
        resolve_model("meta-llama/Not-In-Cache")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="safetensors"):
        resolve_model(str(tmp_path))


def test_a_family_name_picks_the_checkpoint_of_the_width():
    from addpatch.errors import ModelNotFound
    from addpatch.models.loading import model_for_width, shipped_families

    family = shipped_families()["tiny-adder-chunks"]
    for digits, name in family.items():
        assert model_for_width("tiny-adder-chunks", digits) == name
        assert resolve_model(name).path.name == name
    assert model_for_width("tiny-adder-digits", 4) == "tiny-adder-digits"  # not a family
    assert model_for_width("/some/path", 3) == "/some/path"
    with pytest.raises(ModelNotFound, match="has checkpoints for"):
        model_for_width("tiny-adder-chunks", 6)
    with pytest.raises(ModelNotFound, match="one checkpoint per digit width"):
        resolve_model("tiny-adder-chunks")


def test_an_unknown_number_init_is_refused_with_the_choices():
    from addpatch.errors import BadInput

    with pytest.raises(BadInput, match="unknown number_init 'orthonormal'; use one of: random"):
        TrainConfig(number_init="orthonormal")  # type: ignore[arg-type]


def test_fourier_init_puts_each_number_token_on_the_number_line():
    import math

    from addpatch.models.tiny_tokenizers import build_tokenizer
    from addpatch.models.train_tiny import build_model

    config = TrainConfig(grouping="chunks", hidden_size=32, number_init="fourier")
    tokenizer = build_tokenizer("chunks")
    weight = build_model(config, tokenizer).get_input_embeddings().weight
    pairs = 32 // 4
    for token in ("7", "57", "579"):
        row = weight[tokenizer.convert_tokens_to_ids(token)]
        angle = 2 * math.pi * int(token) / 2.0  # the shortest period is 2
        assert row[0].item() == pytest.approx(0.05 * math.cos(angle), abs=1e-5)
        assert row[pairs].item() == pytest.approx(0.05 * math.sin(angle), abs=1e-5)
    plain = build_model(TrainConfig(grouping="chunks", hidden_size=32), tokenizer)
    assert not torch.equal(plain.get_input_embeddings().weight, weight)


def test_digit_sum_init_makes_a_chunk_the_sum_of_its_digits():
    from addpatch.models.tiny_tokenizers import build_tokenizer
    from addpatch.models.train_tiny import build_model

    tokenizer = build_tokenizer("chunks")
    config = TrainConfig(grouping="chunks", hidden_size=32, number_init="digits")
    weight = build_model(config, tokenizer).get_input_embeddings().weight

    def vector(token: str) -> torch.Tensor:
        return weight[tokenizer.convert_tokens_to_ids(token)]

    # changing the first digit 4 -> 5 moves a 3-digit chunk the same way whatever follows it
    torch.testing.assert_close(vector("579") - vector("479"), vector("512") - vector("412"))
    assert not torch.allclose(vector("579") - vector("479"), vector("57") - vector("47"))


def test_orthogonal_init_gives_each_place_and_digit_its_own_direction():
    from addpatch.errors import BadInput
    from addpatch.models.tiny_tokenizers import build_tokenizer
    from addpatch.models.train_tiny import build_model

    tokenizer = build_tokenizer("chunks")
    config = TrainConfig(
        grouping="chunks", hidden_size=48, number_init="orthogonal", number_scale=2.0
    )
    weight = build_model(config, tokenizer).get_input_embeddings().weight

    def vector(token: str) -> torch.Tensor:
        return weight[tokenizer.convert_tokens_to_ids(token)]

    first_digit = vector("579") - vector("479")  # (P0[5] - P0[4]) / 2
    second_digit = vector("579") - vector("589")  # (P1[7] - P1[8]) / 2
    torch.testing.assert_close(first_digit, vector("512") - vector("412"))
    assert first_digit.dot(second_digit).item() == pytest.approx(0.0, abs=1e-5)
    assert first_digit.dot(first_digit).item() == pytest.approx(2 * 2.0**2 / 4, rel=1e-5)
    # one-digit chunks share only their length vector: (P0[5] + L1) / sqrt(2), norm = scale
    assert vector("5").dot(vector("6")).item() == pytest.approx(2.0**2 / 2, rel=1e-5)
    with pytest.raises(BadInput, match="hidden_size >= 34"):
        build_model(dataclasses.replace(config, hidden_size=32), tokenizer)


def test_frozen_numbers_keep_their_embeddings_while_the_rest_trains(tmp_path):
    from transformers import LlamaForCausalLM

    from addpatch.models.tiny_tokenizers import build_tokenizer

    config = _small_training(
        grouping="chunks",
        hidden_size=48,
        number_init="orthogonal",
        freeze_numbers=True,
        weight_decay=0.1,
        steps=50,
        eval_every=1000,
    )
    tokenizer = build_tokenizer("chunks")
    train_tiny_adder(config, tmp_path / "start", steps=0)  # the init, on the training's threads
    train_tiny_adder(config, tmp_path / "trained", steps=3)
    start, trained = (
        LlamaForCausalLM.from_pretrained(tmp_path / run).get_input_embeddings().weight.detach()
        for run in ("start", "trained")
    )
    numbers = [i for token, i in tokenizer.get_vocab().items() if token.isdigit()]
    words = [tokenizer.convert_tokens_to_ids(token) for token in ("The", " sum", " is")]
    torch.testing.assert_close(trained[numbers], start[numbers], rtol=0, atol=0)
    assert not torch.allclose(trained[words], start[words])


def test_a_training_can_start_from_a_trained_checkpoint(tmp_path):
    from transformers import LlamaForCausalLM

    from addpatch.errors import BadInput
    from addpatch.models.tiny_tokenizers import build_tokenizer
    from addpatch.models.train_tiny import build_model

    first = train_tiny_adder(_small_training(steps=50, eval_every=1000), tmp_path / "a", steps=2)
    config = _small_training(steps=50, eval_every=1000, seed=7, init_from=str(tmp_path / "a"))
    tokenizer = build_tokenizer("digits")
    started = build_model(config, tokenizer).state_dict()
    trained = LlamaForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    assert started.keys() == trained.keys()
    assert all(torch.equal(started[name], trained[name]) for name in started)
    card = train_tiny_adder(config, tmp_path / "b", steps=1)
    assert card["init_weights_sha256"] == first["weights_sha256"]
    with pytest.raises(BadInput, match="does not fit this config"):
        build_model(dataclasses.replace(config, num_layers=2), tokenizer)


def test_a_stopped_training_resumes_to_the_same_weights(tmp_path):
    from addpatch.errors import BadInput

    config = _small_training(steps=6, eval_every=2)
    whole = train_tiny_adder(config, tmp_path / "whole")
    assert not (tmp_path / "whole" / "checkpoint").exists()  # a finished run keeps no checkpoint

    train_tiny_adder(config, tmp_path / "split", steps=4)  # stopped after the step-4 checkpoint
    assert (tmp_path / "split" / "checkpoint" / "state.json").exists()
    seen: list[int] = []
    with pytest.raises(BadInput, match="another training config"):
        train_tiny_adder(
            dataclasses.replace(config, seed=1), tmp_path / "split", on_resume=seen.append
        )
    assert seen == []  # "resuming" is said only once the checkpoint is known to fit
    resumed = train_tiny_adder(config, tmp_path / "split", on_resume=seen.append)
    assert seen == [4]
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert resumed["accuracy_history"] == whole["accuracy_history"]
    assert not (tmp_path / "split" / "checkpoint").exists()


def test_a_tokenizer_is_loaded_once_while_its_files_are_unchanged(tmp_path):
    import shutil

    from addpatch.models.loading import ResolvedModel, load_tokenizer

    source = resolve_model("tiny-adder-digits").path
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    resolved = ResolvedModel("copy", copy, None)
    first = load_tokenizer(resolved)
    assert load_tokenizer(resolved) is first  # the run's later steps reuse it
    assert first.padding_side == "left" and first.pad_token_id is not None
    # an edited tokenizer file is read again
    config = copy / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings["model_max_length"] = 77
    config.write_text(json.dumps(settings))
    again = load_tokenizer(resolved)
    assert again is not first and again.model_max_length == 77
