"""The LoRA fine-tuning recipe (`addpatch model train-adapter`), on the shipped tiny adder as base."""

from __future__ import annotations

import json
import random

import pytest
from safetensors.torch import load_file

from addpatch.models.loading import shipped_models
from addpatch.models.train_adapter import (
    AdapterConfig,
    held_out_pairs,
    is_held_out,
    train_adapter,
    training_problems,
)

TINY = AdapterConfig(
    name="tiny-test",
    rank=2,
    target_modules=("q_proj", "v_proj", "down_proj"),
    train_widths=(2, 3),
    eval_widths=(2,),
    batch_size=4,
    warmup_steps=1,
    steps=4,
    threads=1,
    eval_size=8,
    eval_every=4,
    checkpoint_every=2,
)


def test_held_out_problems_are_never_drawn_for_training():
    held = {w: held_out_pairs(TINY, w) for w in (1, 2, 3)}
    assert all(is_held_out(TINY, a, b) for pairs in held.values() for a, b in pairs)
    assert len(held[2]) == len(set(held[2])) == TINY.eval_size
    assert 5 < len(held[1]) < 30  # ~20% of the 81 one-digit problems
    rng = random.Random(0)
    drawn = [p for _ in range(300) for p in training_problems(TINY, rng)]
    assert not any(is_held_out(TINY, a, b) for a, b in drawn)
    assert {len(str(a)) for a, _ in drawn} == {2, 3}  # every width of the config
    assert all(len(str(a)) == len(str(b)) for a, b in drawn)  # both addends of the problem's


def test_a_stopped_run_resumes_to_the_same_adapter(tmp_path):
    base = shipped_models()["tiny-adder-digits"]
    whole = train_adapter(TINY, base, tmp_path / "whole")
    train_adapter(TINY, base, tmp_path / "split", steps=2)
    assert (tmp_path / "split" / "checkpoint" / "state.json").is_file()
    resumed_at: list[int] = []
    split = train_adapter(TINY, base, tmp_path / "split", on_resume=resumed_at.append)
    assert resumed_at == [2]
    assert not (tmp_path / "split" / "checkpoint").exists()  # the run is whole
    first = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    second = load_file(tmp_path / "split" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and len(first) == 3 * 3 * 2  # layers x modules x (A, B)
    assert all(t.dtype.is_floating_point and t.element_size() == 2 for t in first.values())
    assert all((first[k] == second[k]).all() for k in first)
    assert whole["accuracy_by_digits"] == split["accuracy_by_digits"]
    assert whole["adapter_sha256"] == split["adapter_sha256"]
    card = json.loads((tmp_path / "whole" / "card.json").read_text())
    assert card["train_config"]["seed"] == 0 and card["steps_run"] == 4
    assert set(card["accuracy_by_digits"]) == {"2"}


def test_other_training_config_in_the_same_folder_is_refused(tmp_path):
    from dataclasses import replace

    from addpatch.errors import BadInput

    base = shipped_models()["tiny-adder-digits"]
    train_adapter(TINY, base, tmp_path / "out", steps=2)
    with pytest.raises(BadInput, match="another training config"):
        train_adapter(replace(TINY, seed=1), base, tmp_path / "out")
