"""Train the shipped tiny addition models from scratch, deterministically.

A run is fixed by its `TrainConfig` (seed included) and the torch thread count: the same config
on the same machine and thread count gives bit-identical weights. The result is a Hugging Face
Llama checkpoint (config, safetensors, tokenizer) plus `card.json` with the training config,
steps, wall time and measured accuracy per digit width.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import transformers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from addpatch.errors import BadInput
from addpatch.models.greedy_eval import greedy_accuracy
from addpatch.models.tiny_tokenizers import DigitGrouping, build_tokenizer
from addpatch.models.train_checkpoint import (
    TrainingState,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from addpatch.models.weights import sha256_file
from addpatch.task.templates import TWO_ADDEND_TEMPLATE, answer_text, render_prompt

NumberInit = Literal["random", "digits", "orthogonal", "fourier"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a tiny adder; defaults reproduce `tiny-adder-digits`."""

    name: str = "tiny-adder-digits"
    grouping: DigitGrouping = "digits"
    # Each addend's width is drawn independently from these (same-width pairs train far slower).
    train_widths: tuple[int, ...] = (2, 3, 4)
    eval_widths: tuple[int, ...] = (2, 3, 4)
    num_layers: int = 3
    hidden_size: int = 64
    num_heads: int = 4
    ffn_size: int = 256
    max_positions: int = 64
    learning_rate: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.98)
    batch_size: int = 256
    warmup_steps: int = 100
    steps: int = 8000
    final_lr_fraction: float = 0.1  # cosine decays to this share of the peak rate
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    # how number tokens' (tied) embeddings start: "random", "digits" (the sum of an embedding
    # per (place in the chunk, digit), see _digit_sum_numbers), "orthogonal" (the same with
    # orthogonal place/digit vectors of norm `number_scale`) or "fourier" (_fourier_numbers)
    number_init: NumberInit = "random"
    number_scale: float = 1.0
    freeze_numbers: bool = False  # keep number tokens' embeddings at their init
    weight_decay: float = 0.0
    # start from a trained checkpoint (a shipped model's name or a directory) of this same shape
    # instead of a random init: a curriculum, e.g. 4-digit chunks from the 3-digit model
    init_from: str | None = None
    eval_every: int = 500
    eval_size: int = 1000
    eval_seed: int = 12345  # held-out prompts come from this seed and are never trained on
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.number_init not in get_args(NumberInit):
            raise BadInput(
                f"unknown number_init {self.number_init!r}; use one of: "
                + ", ".join(get_args(NumberInit))
            )


def _random_addend(rng: random.Random, width: int) -> int:
    return rng.randint(10 ** (width - 1), 10**width - 1)


def held_out_pairs(config: TrainConfig, width: int) -> list[tuple[int, int]]:
    """The evaluation pairs for one digit width (both addends of that width)."""
    rng = random.Random(config.eval_seed * 100 + width)
    return [
        (_random_addend(rng, width), _random_addend(rng, width)) for _ in range(config.eval_size)
    ]


def _training_batch(
    config: TrainConfig,
    rng: random.Random,
    tokenizer: PreTrainedTokenizerFast,
    excluded: set[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of problems drawn outside `excluded`, as `answer_batch` lays them out."""
    problems: list[tuple[int, int]] = []
    while len(problems) < config.batch_size:
        a = _random_addend(rng, rng.choice(config.train_widths))
        b = _random_addend(rng, rng.choice(config.train_widths))
        if (a, b) not in excluded:
            problems.append((a, b))
    return answer_batch(tokenizer, problems)


def answer_batch(
    tokenizer: PreTrainedTokenizerBase, problems: list[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+answer ids, attention mask, and labels (-100 off the answer: a
    space, the sum, EOS), each (batch, longest row), for `A + B` problems."""
    rows: list[list[int]] = []
    answer_starts: list[int] = []
    for a, b in problems:
        prompt_ids = tokenizer(render_prompt(TWO_ADDEND_TEMPLATE, [a, b]))["input_ids"]
        answer_ids = tokenizer(answer_text(a + b), add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids + [tokenizer.eos_token_id])
        answer_starts.append(len(prompt_ids))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, answer_starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, start : len(row)] = torch.tensor(row[start:])
    return ids, mask, labels


def warmup_cosine_rate(
    step: int, *, peak: float, warmup_steps: int, steps: int, final_fraction: float
) -> float:
    """Linear warm-up to `peak`, then cosine decay to `final_fraction` of it at `steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def _learning_rate(config: TrainConfig, step: int) -> float:
    return warmup_cosine_rate(
        step,
        peak=config.learning_rate,
        warmup_steps=config.warmup_steps,
        steps=config.steps,
        final_fraction=config.final_lr_fraction,
    )


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(config.seed)
    model_config = LlamaConfig(  # type: ignore[call-arg]  # rope_theta via **kwargs
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(model_config)
    if config.number_init == "fourier":
        _fourier_numbers(model, tokenizer)
    elif config.number_init == "digits":
        _digit_sum_numbers(model, tokenizer, config.seed)
    elif config.number_init == "orthogonal":
        if config.hidden_size < _PLACE_DIGIT_LENGTH_VECTORS:
            raise BadInput(
                f"number_init='orthogonal' needs hidden_size >= {_PLACE_DIGIT_LENGTH_VECTORS}"
                " (3 places x 10 digits + 4 chunk lengths); raise hidden_size"
            )
        _digit_sum_numbers(model, tokenizer, config.seed, scale=config.number_scale)
    if config.init_from is not None:
        _load_start_weights(model, config.init_from)
    return model


def start_weights_path(spec: str) -> Path:
    """The safetensors file a run with `init_from=spec` starts from."""
    from addpatch.models.loading import resolve_model

    return resolve_model(spec).path / "model.safetensors"


def _load_start_weights(model: LlamaForCausalLM, spec: str) -> None:
    from safetensors.torch import load_file

    state = load_file(start_weights_path(spec))
    tied = ("lm_head.weight", "model.embed_tokens.weight")  # saved once, under either name
    for name, twin in (tied, tied[::-1]):
        if name not in state and twin in state:
            state[name] = state[twin]
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        name = min(set(expected) ^ set(found) or {n for n in expected if expected[n] != found[n]})
        raise BadInput(
            f"init_from={spec!r} does not fit this config ({name}: {found.get(name)} there, "
            f"{expected.get(name)} here); start from a checkpoint of the same layers and sizes"
        )
    model.load_state_dict(state)


_PLACE_DIGIT_LENGTH_VECTORS = 3 * 10 + 4


def _digit_sum_numbers(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    scale: float | None = None,
) -> None:
    """Start each number token's (tied) embedding as the sum of one random vector per
    (place in the chunk, digit) and one per chunk length: `579` = P0[5] + P1[7] + P2[9] + L3.

    A chunk then starts out as its digits, as the per-digit model sees them, and since the
    embeddings are tied, a chunk's output logit starts as the sum of per-place digit scores:
    the model can learn the sum digit by digit instead of one class out of a thousand.
    """
    weight = _embedding_weight(model)  # [vocab, hidden]
    hidden = weight.shape[1]
    generator = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    if scale is None:
        places = torch.randn(3, 10, hidden, generator=generator) * std  # (place, digit, hidden)
        lengths = torch.randn(4, hidden, generator=generator) * std  # (chunk length, hidden)
    else:  # orthonormal rows: no two (place, digit) vectors interfere
        basis, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))
        places = basis[:30].reshape(3, 10, hidden) * scale
        lengths = basis[30:_PLACE_DIGIT_LENGTH_VECTORS] * scale
    with torch.no_grad():
        for token, index in tokenizer.get_vocab().items():
            if token.isdigit():
                parts = [places[i, int(d)] for i, d in enumerate(token)] + [lengths[len(token)]]
                weight[index] = torch.stack(parts).sum(0) / math.sqrt(len(parts))


def _embedding_weight(model: LlamaForCausalLM) -> torch.Tensor:
    """The (tied) token embedding matrix ([vocab, hidden])."""
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding)
    return embedding.weight


def _fourier_numbers(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    """Start each number token's (tied) embedding from cos/sin of its value at periods 2-2000.

    A chunk token (`579`) must otherwise learn where it sits on the number line from scratch;
    with these features the sum's features are products of the addends' (angle addition), which
    the gated MLP computes directly. Half the width holds them; the rest stays random.
    """
    weight = _embedding_weight(model)  # [vocab, hidden]
    pairs = weight.shape[1] // 4
    periods = 2.0 * 1000.0 ** (torch.arange(pairs) / max(1, pairs - 1))  # 2 .. 2000
    with torch.no_grad():
        for token, index in tokenizer.get_vocab().items():
            if token.isdigit():
                angle = 2 * math.pi * int(token) / periods
                weight[index, : 2 * pairs] = 0.05 * torch.cat([angle.cos(), angle.sin()])


def _frozen_number_rows(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> tuple[torch.Tensor, torch.Tensor]:
    """The number tokens' row indices and their initial embeddings ([n], [n, hidden])."""
    rows = torch.tensor(sorted(i for t, i in tokenizer.get_vocab().items() if t.isdigit()))
    weight = _embedding_weight(model)
    return rows.to(weight.device), weight.detach()[rows.to(weight.device)].clone()


def _restore_rows(model: LlamaForCausalLM, rows: torch.Tensor, values: torch.Tensor) -> None:
    with torch.no_grad():
        _embedding_weight(model)[rows] = values


ProgressCallback = Callable[[int, float, dict[int, float] | None], None]


def train_tiny_adder(
    config: TrainConfig,
    out_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    steps: int | None = None,
    device: torch.device | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train one tiny adder into `out_dir`; returns the model card written beside the weights.

    `steps` stops early without changing the schedule, so a short run is the prefix of the full
    one. At every evaluation the whole state is checkpointed in OUT/checkpoint; a run started
    again on the same OUT resumes there and ends bit-identical to one that never stopped. On CUDA (`device`), deterministic kernels keep two runs on the same GPU
    model identical; CPU and GPU runs differ from each other.
    """
    device = device or torch.device("cpu")
    hf_logging.disable_progress_bar()  # progress is the caller's to show
    torch.set_num_threads(config.threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer(config.grouping)
    model = build_model(config, tokenizer)
    torch.nn.Module.to(model, device)  # in place (PreTrainedModel.to's wrapper is mistyped)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=config.betas,
        weight_decay=config.weight_decay,
    )
    frozen = _frozen_number_rows(model, tokenizer) if config.freeze_numbers else None
    held_out = {w: held_out_pairs(config, w) for w in config.eval_widths}
    excluded = {pair for pairs in held_out.values() for pair in pairs}
    rng = random.Random(config.seed)
    last_step = config.steps if steps is None else min(steps, config.steps)
    resumed = load_checkpoint(
        out_dir, config=config, device=device, model=model, optimizer=optimizer, rng=rng
    )
    if resumed is not None and on_resume is not None:
        on_resume(resumed.step)
    state = resumed or TrainingState(step=0, history=[], wall_time_s=0.0)
    history = state.history
    started = time.perf_counter() - state.wall_time_s
    for step in range(state.step, last_step):
        model.train()
        ids, mask, labels = (
            t.to(device) for t in _training_batch(config, rng, tokenizer, excluded)
        )
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if frozen is not None:
            _restore_rows(model, *frozen)
        accuracy = None
        done = step + 1
        if done % config.eval_every == 0 or done == last_step:
            accuracy = {
                w: greedy_accuracy(model, tokenizer, held_out[w], batch_size=500)
                for w in config.eval_widths
            }
            history.append({"step": done, "loss": loss.item(), "accuracy": accuracy})
            state = TrainingState(done, history, time.perf_counter() - started)
            save_checkpoint(
                out_dir,
                config=config,
                device=device,
                model=model,
                optimizer=optimizer,
                rng=rng,
                state=state,
            )
        if progress is not None:
            progress(done, loss.item(), accuracy)
    wall = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.nn.Module.to(model, "cpu")  # in place
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    final = history[-1]["accuracy"] if history else {}
    card = {
        "name": config.name,
        "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": config.grouping,
        "prompt": TWO_ADDEND_TEMPLATE,
        "answer": "a space, the decimal sum, then <eos>",
        "train_config": asdict(config),
        "steps_run": last_step,
        "wall_time_s": round(wall, 1),
        "accuracy_by_digits": {str(w): a for w, a in final.items()},
        "accuracy_history": history,
        "eval": f"exact-match greedy generation on {config.eval_size} held-out prompts per width",
        "weights_sha256": sha256_file(out_dir / "model.safetensors"),
        **(
            {"init_weights_sha256": sha256_file(start_weights_path(config.init_from))}
            if config.init_from is not None
            else {}
        ),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {config.threads} torch thread(s)"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    if last_step == config.steps:
        remove_checkpoint(out_dir)  # the run is whole; a shortened one (`steps`) can go on
    return card
