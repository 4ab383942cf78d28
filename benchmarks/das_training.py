"""DAS training: addpatch's frozen-prefix trainer vs the plain loop pyvene and causalab run.

    python benchmarks/das_training.py                       # both models, CPU (CUDA when present)
    python benchmarks/das_training.py --threads 0           # torch's own thread count
    python benchmarks/das_training.py --models tiny --examples 256

For one cell (a middle layer; the last prompt token, and on the 12-layer model also the first
addend's first digit, where the fewest tokens are frozen) and the same seeded subspace, batches and
steps:
  plain  both prompts (base with the label's answer teacher-forced, and counterfactual) through
         the whole model at every step, the intervention in a forward hook, backward into R;
  fast   addpatch's `train_subspace`: each batch laid out and its frozen part (every layer up
         to the cell's, every token before the unit) computed once, then only layers L+1..
         over only the tokens from the unit on at every step.
Both must give the same losses and the same trained subspace (to float tolerance); the
speed-up is plain time / fast time, measured in one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from addpatch.das.examples import make_examples
from addpatch.das.training import TrainSettings, train_plain, train_subspace
from addpatch.engine.patching import PromptPair
from addpatch.engine.positions import layout_input
from addpatch.models.loading import load_model, resolve_model
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import GENERATORS
from addpatch.task.labels import label_many
from benchmarks.patch_sweep import random_llama


def _examples(tokenizer, count: int, digits: int) -> list:
    task = AdditionTask(num_addends=2, num_digits=digits)
    pairs = GENERATORS["random"](task, count, 0)
    labels = {i: v for i, (_, v) in enumerate(label_many(task, pairs, "C_1"))}
    prompt_pairs = [
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in enumerate(pairs)
    ]
    return make_examples(tokenizer, prompt_pairs, labels)


def bench(name: str, model, tokenizer, examples: list, layer: int, unit: str, k: int) -> dict:
    settings = TrainSettings(k=k, batch_size=32, seed=0)  # the defaults: 4 epochs, lr 1e-2
    pad = tokenizer.pad_token_id
    warm = TrainSettings(k=k, epochs=1, batch_size=32, seed=0)  # first calls' one-time costs
    train_subspace(model, pad, examples[:32], layer, unit, warm)
    train_plain(model, pad, examples[:32], layer, unit, warm)
    started = time.perf_counter()
    fast = train_subspace(model, pad, examples, layer, unit, settings)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = train_plain(model, pad, examples, layer, unit, settings)
    plain_s = time.perf_counter() - started
    loss_gap = max(abs(a - b) for a, b in zip(fast.losses, plain.losses, strict=True))
    basis_gap = float((fast.basis - plain.basis).abs().max())
    return {
        "model": name,
        "cell": f"layer {layer}, {unit}, k {k}",
        "steps": len(fast.losses),
        "same": loss_gap < 1e-3 and basis_gap < 1e-3,
        "loss_gap": loss_gap,
        "basis_gap": basis_gap,
        "plain_s": plain_s,
        "fast_s": fast_s,
        "speedup": plain_s / fast_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama-12x768")
    parser.add_argument("--examples", type=int, default=512, help="train pairs, tiny adder")
    parser.add_argument("--examples-large", type=int, default=64, help="train pairs, 12x768")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    results = []
    if "tiny" in args.models:
        model, tokenizer = load_model(resolve_model("tiny-adder-digits"), device, torch.float32)
        examples = _examples(tokenizer, args.examples, 2)
        results.append(bench("tiny-adder-digits", model, tokenizer, examples, 1, "last", 4))
    if "llama-12x768" in args.models:
        tokenizer = build_tokenizer("digits")
        model = random_llama(tokenizer, device)
        examples = _examples(tokenizer, args.examples_large, 3)
        for unit in ("last", "a0.d0"):  # the answer slot; the prompt's first digit (worst)
            results.append(
                bench("llama-12x768 (random init)", model, tokenizer, examples, 5, unit, 16)
            )
    print(
        f"{'model':<28} {'cell':<24} {'steps':>5} {'same':>5} {'plain s':>8} {'fast s':>8} "
        f"{'speed-up':>8}"
    )
    for r in results:
        print(
            f"{r['model']:<28} {r['cell']:<24} {r['steps']:>5} {str(r['same']):>5} "
            f"{r['plain_s']:>8.2f} {r['fast_s']:>8.2f} {r['speedup']:>7.1f}x"
        )


if __name__ == "__main__":
    main()
