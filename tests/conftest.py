"""Shared fixtures: throw-away stores, and tiny random-init models of several architectures."""

from __future__ import annotations

import os

import pytest
import typer
import typer.testing

from addpatch.caches import CACHE_ENV

# PyTorch and transformers are imported where they are used, not here: every pytest process
# loads this file first, the xdist controller too, which runs no test and would wait ~7 s for
# them before starting its workers

_build_command = typer.testing._get_command
_built_commands: dict[tuple[int, int, int], object] = {}


def _command_built_once(app: typer.Typer):
    """typer's CliRunner builds the click command from the app on every `invoke` (~35 ms: it
    reads every command's signature and type hints); the suite invokes the app hundreds of
    times, so each app's command is built once (click commands are made to be invoked again)."""
    key = (id(app), len(app.registered_commands), len(app.registered_groups))
    if key not in _built_commands:
        _built_commands[key] = _build_command(app)
    return _built_commands[key]


typer.testing._get_command = _command_built_once

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: one torch thread each, so two workers' matrix
    # products do not fight over the same cores; the processes a test starts (`addpatch run`,
    # Ray's workers) inherit the one thread through the environment
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """No test touches ./addpatch-store: ADDPATCH_STORE points into the test's tmp dir (and the
    weights-hash cache too, instead of ~/.cache/addpatch)."""
    store = tmp_path / "store"
    monkeypatch.setenv("ADDPATCH_STORE", str(store))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return store


def _common(tokenizer) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def tiny_config(family: str, tokenizer):
    """A 2-layer random-init config of each supported architecture (no downloads)."""
    from transformers import (
        Gemma2Config,
        Gemma3Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Olmo2Config,
        Qwen2Config,
        Qwen3Config,
    )

    common = _common(tokenizer)
    rope = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    }
    if family == "llama":
        return LlamaConfig(**rope, num_key_value_heads=2, **common)
    if family == "gemma2":
        return Gemma2Config(
            **rope,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=6,
            query_pre_attn_scalar=8,
            **common,
        )
    if family == "gemma3":
        # three layers: local (sliding, its own RoPE base) and global attention both run
        return Gemma3TextConfig(
            **{**rope, "num_hidden_layers": 3},
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=6,
            query_pre_attn_scalar=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            **common,
        )
    if family == "gemma3_multimodal":  # what AutoModelForCausalLM builds for Gemma-3 4B and up
        return Gemma3Config(
            text_config=tiny_config("gemma3", tokenizer).to_dict(),
            vision_config={
                "hidden_size": 8,
                "intermediate_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "image_size": 28,
                "patch_size": 14,
            },
            mm_tokens_per_image=4,
        )
    if family == "qwen3":
        return Qwen3Config(**rope, num_key_value_heads=2, head_dim=8, **common)
    if family == "olmo2":
        return Olmo2Config(**rope, num_key_value_heads=4, **common)
    if family == "qwen2":
        return Qwen2Config(**rope, num_key_value_heads=2, **common)
    if family == "mistral":
        return MistralConfig(**rope, num_key_value_heads=2, sliding_window=5, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            rotary_pct=0.5,
            **common,
        )
    raise ValueError(family)


FAMILIES = [
    "llama",
    "gemma2",
    "gemma3",
    "gemma3_multimodal",
    "olmo2",
    "qwen2",
    "qwen3",
    "mistral",
    "gpt2",
    "gpt_neox",
]


def tiny_model(family: str, grouping: str = "digits", seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    from addpatch.models.tiny_tokenizers import build_tokenizer

    tokenizer = build_tokenizer(grouping)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, tokenizer)).eval()
    return model, tokenizer


# the modules whose tests take longest start first, so that with one worker per core (`make test`)
# the suite does not end with one worker alone on a long module
LONGEST_FIRST = (  # by their time in `pytest --durations=0`, longest first
    "test_real_weights.py",
    "test_sweep.py",
    "test_real_models.py",
    "test_notebooks.py",
    "test_cli.py",
    "test_failure_injection.py",
    "test_prompts.py",
    "test_docs.py",
    "test_interrupted_runs.py",
    "test_failure_examples.py",
    "test_concurrency.py",
    "test_bad_input.py",
    "test_components.py",
    "test_cli_components.py",
    "test_real_tokenizers.py",
    "test_engine.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order
