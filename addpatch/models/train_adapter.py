"""Fine-tune a pretrained causal LM on addition with a LoRA adapter (peft), deterministically.

A run is fixed by its `AdapterConfig` (seed included), the base checkpoint and the torch thread
count. The loss is on the answer tokens only (` 68` and EOS after `The sum of 23 and 45 is`, the
rendering `addpatch run` checks), each problem's width is drawn from `train_widths` and both addends
have it (as in the datasets `addpatch run` builds), and
the held-out problems are a fixed share of all pairs (chosen by a hash of the pair), never drawn
for training. The result is the adapter in peft's format (`adapter_model.safetensors` in fp16,
`adapter_config.json`) plus `card.json` with the config, the base's sha256, the wall time and the
greedy accuracy per width on held-out problems. The state is checkpointed every
`checkpoint_every` steps (the adapter's weights only); a run started again resumes there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers

from addpatch.errors import BadInput
from addpatch.models.greedy_eval import greedy_accuracy
from addpatch.models.train_checkpoint import (
    TrainingState,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from addpatch.models.train_tiny import answer_batch, warmup_cosine_rate
from addpatch.models.weights import sha256_file
from addpatch.task.templates import TWO_ADDEND_TEMPLATE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LORA_EXTRA = "pip install 'addpatch[lora]'"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterConfig:
    """Everything that determines an adapter; defaults reproduce the shipped `smollm2-adder`."""

    name: str = "smollm2-adder"
    rank: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] = ATTENTION + MLP
    train_widths: tuple[int, ...] = (1, 2, 3)  # one per problem, both addends
    eval_widths: tuple[int, ...] = (1, 2, 3)  # both addends of the width
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    steps: int = 400
    final_lr_fraction: float = 0.1  # cosine decays to this share of the peak rate
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # one: a busy 2-core machine stalls two threads at every sync
    held_out_share: float = 0.2  # of all pairs, by a hash of (a, b, eval_seed)
    eval_seed: int = 12345
    eval_every: int = 400  # evaluating costs minutes on a busy CPU: at the end only
    eval_size: int = 500  # held-out pairs per width (all of them where there are fewer)
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.held_out_share < 1:
            raise BadInput(f"held_out_share must be between 0 and 1, got {self.held_out_share}")
        if self.rank < 1 or self.steps < 1 or self.batch_size < 1:
            raise BadInput("rank, steps and batch_size must be at least 1")


def is_held_out(config: AdapterConfig, a: int, b: int) -> bool:
    """Whether the problem `a + b` belongs to the held-out share (never trained on)."""
    digest = hashlib.sha256(f"{config.eval_seed}:{a}+{b}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < config.held_out_share * 2**64


def _random_addend(rng: random.Random, width: int) -> int:
    return rng.randint(10 ** (width - 1), 10**width - 1)


def held_out_pairs(
    config: AdapterConfig, width: int, size: int | None = None
) -> list[tuple[int, int]]:
    """Up to `size` (default `eval_size`) distinct held-out problems, both addends `width` wide.

    A fixed list for the config: every pair when there are few (1 digit: 81 pairs, ~16 held
    out), else drawn in a seeded order."""
    size = config.eval_size if size is None else size
    addends = range(10 ** (width - 1), 10**width)
    rng = random.Random(config.eval_seed * 100 + width)
    if len(addends) ** 2 <= 20 * size:
        every = [
            (a, b) for a, b in itertools.product(addends, addends) if is_held_out(config, a, b)
        ]
        rng.shuffle(every)
        return every[:size]
    found: dict[tuple[int, int], None] = {}
    while len(found) < size:
        pair = (_random_addend(rng, width), _random_addend(rng, width))
        if is_held_out(config, *pair):
            found[pair] = None
    return list(found)


def training_problems(config: AdapterConfig, rng: random.Random) -> list[tuple[int, int]]:
    """One batch of problems, both addends of a width drawn per problem; held-out ones are
    redrawn."""
    problems: list[tuple[int, int]] = []
    while len(problems) < config.batch_size:
        width = rng.choice(config.train_widths)
        a, b = _random_addend(rng, width), _random_addend(rng, width)
        if not is_held_out(config, a, b):
            problems.append((a, b))
    return problems


def _training_batch(
    config: AdapterConfig, rng: random.Random, tokenizer: PreTrainedTokenizerBase
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of training problems, as `answer_batch` lays them out."""
    return answer_batch(tokenizer, training_problems(config, rng))


def require_peft() -> None:
    if importlib.util.find_spec("peft") is None:
        raise BadInput(f"LoRA adapters need the peft package; install it with `{LORA_EXTRA}`")


def _lora_model(config: AdapterConfig, base: PreTrainedModel) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)  # LoRA's A matrices start random, B at zero
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # any number: LoRA scales by alpha/r
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)  # type: ignore[return-value]  # a wrapper of the base


def _load_base(base_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not (base_dir / "config.json").is_file():
        raise BadInput(f"{base_dir} is not a Hugging Face checkpoint (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.float32, use_safetensors=True
    )
    return model, tokenizer


Progress = Callable[[int, int, float, dict[int, float] | None], None]  # step, of, loss, accuracy


def train_adapter(
    config: AdapterConfig,
    base_dir: Path,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    steps: int | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train one adapter on the checkpoint in `base_dir` into `out_dir`; returns its card.

    `steps` stops early without changing the schedule (a short run is the prefix of the full
    one, and the same command without it goes on from the checkpoint). CPU only: its runs are
    the ones the shipped adapter's card reproduces.
    """
    require_peft()
    torch.set_num_threads(config.threads)
    base, tokenizer = _load_base(base_dir)
    model = _lora_model(config, base)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    held_out = {w: held_out_pairs(config, w) for w in config.eval_widths}
    rng = random.Random(config.seed)
    last_step = config.steps if steps is None else min(steps, config.steps)
    cpu = torch.device("cpu")
    resumed = load_checkpoint(
        out_dir,
        config=config,
        device=cpu,
        model=model,
        optimizer=optimizer,
        rng=rng,
        trainable_only=True,
    )
    if resumed is not None and on_resume is not None:
        on_resume(resumed.step)
    state = resumed or TrainingState(step=0, history=[], wall_time_s=0.0)
    history = state.history
    started = time.perf_counter() - state.wall_time_s
    for step in range(state.step, last_step):
        model.train()
        ids, mask, labels = _training_batch(config, rng, tokenizer)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_rate(
                step,
                peak=config.learning_rate,
                warmup_steps=config.warmup_steps,
                steps=config.steps,
                final_fraction=config.final_lr_fraction,
            )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        done = step + 1
        accuracy = None
        if done % config.eval_every == 0 or done == last_step:
            accuracy = {w: greedy_accuracy(model, tokenizer, held_out[w]) for w in held_out}
            history.append({"step": done, "loss": loss.item(), "accuracy": accuracy})
        if accuracy is not None or done % config.checkpoint_every == 0:
            save_checkpoint(
                out_dir,
                config=config,
                device=cpu,
                model=model,
                optimizer=optimizer,
                rng=rng,
                state=TrainingState(done, history, time.perf_counter() - started),
                trainable_only=True,
            )
        if progress is not None:
            progress(done, last_step, loss.item(), accuracy)
    if not history or history[-1]["step"] != last_step:  # resumed at its last step: no eval yet
        accuracy = {w: greedy_accuracy(model, tokenizer, held_out[w]) for w in held_out}
        history.append({"step": last_step, "loss": None, "accuracy": accuracy})
    wall = time.perf_counter() - started
    card = _write_adapter(config, model, base_dir, out_dir, history, last_step, wall, held_out)
    if last_step == config.steps:
        remove_checkpoint(out_dir)  # the run is whole; a shortened one (`steps`) can go on
    return card


def _write_adapter(
    config: AdapterConfig,
    model: PreTrainedModel,
    base_dir: Path,
    out_dir: Path,
    history: list[dict[str, Any]],
    steps_run: int,
    wall: float,
    held_out: dict[int, list[tuple[int, int]]],
) -> dict[str, Any]:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {
        name: tensor.detach().to(torch.float16).contiguous()
        for name, tensor in get_peft_model_state_dict(model).items()
    }
    save_file(weights, str(out_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    peft_config = model.peft_config["default"]
    peft_config.base_model_name_or_path = None  # a local path; the card names the base's files
    peft_config.save_pretrained(str(out_dir))
    saved = json.loads((out_dir / "adapter_config.json").read_text())
    saved["target_modules"] = sorted(saved["target_modules"])  # a set: same file every run
    (out_dir / "adapter_config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    base_card_file = base_dir / "card.json"
    base_card = json.loads(base_card_file.read_text()) if base_card_file.is_file() else {}
    final = history[-1]["accuracy"] if history else {}
    card = {
        "name": config.name,
        "kind": "LoRA adapter (peft), fp16 safetensors",
        "base_source_file": base_card.get("source_file"),
        "base_source_sha256": base_card.get("source_sha256"),
        "base_weights_sha256": sha256_file(base_dir / "model.safetensors"),
        "prompt": TWO_ADDEND_TEMPLATE,
        "answer": "a space, the decimal sum, then <eos> (loss on these tokens only)",
        "train_config": asdict(config),
        "steps_run": steps_run,
        "wall_time_s": round(wall, 1),
        "accuracy_by_digits": {str(w): a for w, a in final.items()},
        "held_out_pairs_by_digits": {str(w): len(p) for w, p in held_out.items()},
        "accuracy_history": history,
        "eval": "exact-match greedy generation (transformers generate) on held-out problems, "
        "both addends of the width",
        "adapter_sha256": sha256_file(out_dir / ADAPTER_WEIGHTS),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": _peft_version(),
        "machine": f"{platform.machine()}, {config.threads} torch thread(s)",
        "reproduce": f"addpatch model train-adapter --name {config.name} --out ./{config.name}",
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _peft_version() -> str:
    import peft

    return str(peft.__version__)
