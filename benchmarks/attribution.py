"""Attribution patching vs exact patching: cells scored per second, and how the rankings agree.

    python benchmarks/attribution.py                      # both parts, CPU (CUDA when present)
    python benchmarks/attribution.py --parts cost --examples-large 8

cost       the 12 x 768 Llama (random init, digits tokenizer): every cell of the grid (resid,
           then heads) scored by exact patching (PatchEngine.sweep: a patched forward and a
           generation per cell) and by attribution patching (engine.attribution.attribute: two
           forwards, a generation and a backward per distinct metric, for all of the task's
           default targets), on the same examples; the ratio of cells per second, measured in
           one run. A random-init model answers nonsense, so attribution reads its metrics
           teacher-forced on the true sums (what a model that adds would answer).
agreement  the shipped adders: per target and component, the cells ranked by attribution's mean
           estimate and by exact IIA over the informative examples (label != base answer);
           Spearman's rho and the overlap of the two top-10 lists, averaged over targets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import polars as pl
import torch

from addpatch.engine.attribution import attribute
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_input
from addpatch.experiment.filtering import answer_budget
from addpatch.models.loading import load_model, resolve_model
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.report.attribution import agreement
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs
from addpatch.task.labels import default_targets, label_many
from benchmarks.patch_sweep import random_llama


def _pairs(engine: PatchEngine, task: AdditionTask, examples: int, seed: int = 0):
    drawn = generate_pairs("random", task, examples, seed=seed)
    pairs = [
        PromptPair(i, layout_input(engine.tokenizer, p.base), layout_input(engine.tokenizer, p.counterfactual))
        for i, p in enumerate(drawn)
    ]  # fmt: skip
    labels = {
        target: {i: value for i, (_, value) in enumerate(label_many(task, drawn, target))}
        for target in default_targets(task)
    }
    sums = [sum(p.base.numbers) for p in drawn]
    return pairs, labels, sums


def _sync(engine: PatchEngine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def cost(examples: int, device: torch.device, components: list[str]) -> list[dict[str, object]]:
    tokenizer = build_tokenizer("digits")
    model = random_llama(tokenizer, device)
    engine = PatchEngine(model, tokenizer)
    task = AdditionTask(num_addends=2, num_digits=2)
    pairs, labels, sums = _pairs(engine, task, examples)
    answers = [list(tokenizer(f" {s}", add_special_tokens=False)["input_ids"]) for s in sums]
    positions = list(pairs[0].base.canonical)
    steps = 3
    out = []
    for component in components:
        layers = list(range(-1 if component == "resid" else 0, engine.num_layers))
        heads = engine.num_heads if component == "heads" else 1
        cells = len(pairs) * len(layers) * heads * len(positions)
        list(engine.sweep(pairs[:1], layers[:1], positions[:1], steps, components=(component,)))
        started = time.perf_counter()
        exact_rows = sum(
            t.num_rows
            for t in engine.sweep(pairs, layers, positions, steps, components=(component,))
        )
        _sync(engine)
        exact_s = time.perf_counter() - started
        assert exact_rows == cells
        started = time.perf_counter()
        table = attribute(
            engine,
            pairs,
            labels,
            layers,
            positions,
            steps,
            components=(component,),
            answers=answers,
        )
        _sync(engine)
        attribution_s = time.perf_counter() - started
        out.append(
            {
                "component": component,
                "device": str(engine.device),
                "cells": cells,
                "targets": len(labels),
                "estimates": table.num_rows - len(pairs) * len(labels),
                "exact_per_s": cells / exact_s,
                "attribution_per_s": cells / attribution_s,
                "ratio": exact_s / attribution_s,
            }
        )
    return out


def agreement_rows(
    name: str, digits: int, examples: int, device: torch.device, components: list[str]
) -> list[dict[str, object]]:
    model, tokenizer = load_model(resolve_model(name), device, torch.float32)
    engine = PatchEngine(model, tokenizer)
    task = AdditionTask(num_addends=2, num_digits=digits)
    pairs, labels, sums = _pairs(engine, task, examples)
    positions = list(pairs[0].base.canonical)
    steps = answer_budget(tokenizer, 2 * (10**digits - 1))
    out = []
    for component in components:
        layers = list(range(-1 if component == "resid" else 0, engine.num_layers))
        exact = pl.concat(
            pl.from_arrow(t).select("example_id", "layer", "position", "head", "answer")
            for t in engine.sweep(pairs, layers, positions, steps, components=(component,))
        )
        table = pl.from_arrow(
            attribute(engine, pairs, labels, layers, positions, steps, components=(component,))
        )
        estimates = table.filter(pl.col("component").is_not_null())
        rhos, overlaps = [], []
        for target, by_example in labels.items():
            informative = pl.DataFrame(
                {
                    "example_id": list(by_example),
                    "label": list(by_example.values()),
                    "base": sums,
                }
            ).filter(pl.col("label") != pl.col("base"))
            if informative.height == 0:
                continue
            iia = (
                exact.join(informative, on="example_id")
                .group_by("layer", "position", "head")
                .agg((pl.col("answer") == pl.col("label")).mean().alias("iia"))
            )
            mean = (
                estimates.filter(pl.col("target") == target)
                .group_by("layer", "position", "head")
                .agg(pl.col("estimate").mean().alias("mean_estimate"))
            )
            both = mean.join(iia, on=["layer", "position", "head"], nulls_equal=True).rename(
                {"position": "position_name"}
            )
            rho, overlap = agreement(both)
            if rho is not None:
                rhos.append(rho)
            if overlap is not None:
                overlaps.append(overlap)
        out.append(
            {
                "model": name,
                "component": component,
                "targets": len(rhos),
                "spearman": statistics.fmean(rhos) if rhos else float("nan"),
                "top10_overlap": statistics.fmean(overlaps) if overlaps else float("nan"),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="cost,agreement")
    parser.add_argument("--examples-large", type=int, default=4, help="examples, 12x768 Llama")
    parser.add_argument("--examples", type=int, default=64, help="examples, shipped adders")
    parser.add_argument("--components", default="resid,heads")
    parser.add_argument(
        "--adders", default="tiny-adder-digits:2,tiny-adder-chunks-d2:2,tiny-adder-chunks-d3:3"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    if "cost" in args.parts:
        print(
            f"{'12x768 Llama':<14} {'device':<6} {'cells':>6} {'targets':>7} "
            f"{'exact/s':>9} {'attribution/s':>13} {'ratio':>7}"
        )
        for r in cost(args.examples_large, device, components):
            print(
                f"{r['component']:<14} {r['device']:<6} {r['cells']:>6} {r['targets']:>7} "
                f"{r['exact_per_s']:>9.1f} {r['attribution_per_s']:>13.1f} {r['ratio']:>6.1f}x"
            )
    if "agreement" in args.parts:
        print(f"{'adder':<22} {'component':<9} {'targets':>7} {'Spearman':>8} {'top-10':>7}")
        for spec in args.adders.split(","):
            name, digits = spec.split(":")
            for r in agreement_rows(name, int(digits), args.examples, device, components):
                print(
                    f"{r['model']:<22} {r['component']:<9} {r['targets']:>7} "
                    f"{r['spearman']:>8.2f} {r['top10_overlap']:>7.2f}"
                )


if __name__ == "__main__":
    main()
