"""Multi-position units: what patching positions together costs, measured in one run.

    python benchmarks/units.py                       # both models, CPU (CUDA when present)
    python benchmarks/units.py --models tiny --examples 32

For each model, on the same examples and every layer (residual stream):
  singles        the engine on single positions a0.d1, a1.d1, last;
  units          the engine on units a0.d1+last, a1.d1+last, a0.d1+a1.d1+last;
  naive units    the naive hooked loop on the same units (one counterfactual forward kept,
                 then a hooked `generate` per cell that replaces every position of the unit).
A unit's cell reruns the prompt from its earliest position, like a single position there,
so units cost about what their earliest positions cost. Engine and naive answers must agree.
"""

from __future__ import annotations

import argparse
import time

import torch

from addpatch.engine.naive import CounterfactualCache, naive_patch_batch
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_input
from addpatch.experiment.filtering import answer_budget
from addpatch.models.loading import load_model, resolve_model
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs
from benchmarks.patch_sweep import random_llama

SINGLES = ["a0.d1", "a1.d1", "last"]
UNITS = ["a0.d1+last", "a1.d1+last", "a0.d1+a1.d1+last"]


def _timed_engine(
    engine: PatchEngine, pairs: list[PromptPair], layers: list[int], names: list[str], steps: int
) -> tuple[float, dict[tuple[int, int, int], list[int]]]:
    started = time.perf_counter()
    rows = [r for t in engine.sweep(pairs, layers, names, steps) for r in t.to_pylist()]
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return seconds, {(r["example_id"], r["layer"], r["position"]): r["token_ids"] for r in rows}


def bench(label: str, model, tokenizer, examples: int, steps: int | None) -> dict:
    engine = PatchEngine(model, tokenizer)
    task = AdditionTask(num_addends=2, num_digits=2)
    pairs = [
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in enumerate(generate_pairs("random", task, examples, seed=0))
    ]
    layers = list(range(-1, engine.num_layers))
    steps = steps or answer_budget(tokenizer, 2 * 99)
    cells = len(pairs) * len(layers) * len(UNITS)
    list(engine.sweep(pairs[:2], layers[:1], UNITS[:1], steps))  # warm-up

    singles_s, _ = _timed_engine(engine, pairs, layers, SINGLES, steps)
    units_s, engine_rows = _timed_engine(engine, pairs, layers, UNITS, steps)
    started = time.perf_counter()
    cache = CounterfactualCache()
    naive_rows = {}
    for layer in layers:
        for index, name in enumerate(UNITS):
            answers = naive_patch_batch(model, tokenizer, pairs, layer, name, steps, cache=cache)
            for pair, answer in zip(pairs, answers, strict=True):
                naive_rows[(pair.example_id, layer, index)] = answer.tokens
    naive_s = time.perf_counter() - started
    return {
        "model": label,
        "device": str(engine.device),
        "cells": cells,
        "identical": engine_rows == naive_rows,
        "singles_per_s": cells / singles_s,
        "units_per_s": cells / units_s,
        "naive_per_s": cells / naive_s,
        "units_over_singles": units_s / singles_s,
        "speedup": naive_s / units_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama-12x768", help="tiny, llama-12x768, or both")
    parser.add_argument("--examples", type=int, default=64, help="examples for the tiny adder")
    parser.add_argument(
        "--examples-large", type=int, default=8, help="examples for the 12-layer model"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    results = []
    if "tiny" in args.models:
        model, tokenizer = load_model(resolve_model("tiny-adder-digits"), device, torch.float32)
        results.append(bench("tiny-adder-digits", model, tokenizer, args.examples, None))
    if "llama-12x768" in args.models:
        tokenizer = build_tokenizer("digits")
        model = random_llama(tokenizer, device)
        results.append(
            bench("llama-12x768 (random init)", model, tokenizer, args.examples_large, 3)
        )
    print(
        f"{'model':<28} {'device':<6} {'cells':>6} {'identical':>9} {'singles/s':>10} "
        f"{'units/s':>8} {'naive units/s':>13} {'units/singles time':>18} {'engine vs naive':>15}"
    )
    for r in results:
        print(
            f"{r['model']:<28} {r['device']:<6} {r['cells']:>6} {str(r['identical']):>9} "
            f"{r['singles_per_s']:>10.1f} {r['units_per_s']:>8.1f} {r['naive_per_s']:>13.1f} "
            f"{r['units_over_singles']:>17.2f}x {r['speedup']:>14.1f}x"
        )


if __name__ == "__main__":
    main()
