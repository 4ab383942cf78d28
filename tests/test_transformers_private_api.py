"""The private transformers helpers the weights check calls (`check_weights_match_config` in
addpatch/experiment/preflight.py follows transformers' own loading rules, which have no public
API): each is named here with what addpatch passes and reads, so an upgrade of transformers that
moves or changes one fails here, by name, instead of somewhere in a run."""

from __future__ import annotations

import inspect

import torch
import transformers
from transformers import AutoModelForCausalLM

from tests.conftest import tiny_model


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_pinned_transformers_is_the_one_checked():
    # pyproject.toml pins it; the helpers below are checked against this version
    assert transformers.__version__ == "5.23.0"


def test_conversion_mapping_and_key_renaming_keep_their_signatures():
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    assert _parameters(get_model_conversion_mapping)[0] == "model"
    assert _parameters(rename_source_key)[:5] == [
        "source_key",
        "weight_renamings",
        "weight_converters",
        "base_model_prefix",
        "meta_state_dict",
    ]
    assert {"source_patterns", "target_patterns"} <= set(_parameters(WeightConverter))
    assert inspect.isclass(WeightRenaming)


def test_load_state_dict_info_keeps_its_fields():
    from transformers.utils.loading_report import LoadStateDictInfo

    assert set(_parameters(LoadStateDictInfo)) == {
        "missing_keys",
        "unexpected_keys",
        "mismatched_keys",
        "error_msgs",
        "conversion_errors",
        "skipped_pp_keys",
    }


def test_the_model_methods_used_still_behave():
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    from transformers.utils.loading_report import LoadStateDictInfo

    model, _ = tiny_model("llama")
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(model.config)
    expected = {key: list(value.shape) for key, value in meta.state_dict().items()}
    mapping = get_model_conversion_mapping(meta)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    key = "model.layers.0.mlp.up_proj.weight"
    assert rename_source_key(key, renamings, converters, meta.base_model_prefix, expected) == (
        key,
        None,
    )
    # a base model's checkpoint names its tensors without the prefix
    bare = rename_source_key(
        "layers.0.mlp.up_proj.weight", renamings, converters, "model", expected
    )
    assert bare[0] == key
    assert isinstance(meta.all_tied_weights_keys, dict)
    assert meta.is_custom_code() is False
    info = LoadStateDictInfo(
        missing_keys={key},
        unexpected_keys=set(),
        mismatched_keys=set(),
        error_msgs=[],
        conversion_errors={},
        skipped_pp_keys=set(),
    )
    meta._adjust_missing_and_unexpected_keys(info)  # the model's keys to ignore on load
    assert info.missing_keys == {key}  # a real parameter is not ignored


def test_the_causal_lm_mapping_is_where_addpatch_reads_it():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES["llama"] == "LlamaForCausalLM"
