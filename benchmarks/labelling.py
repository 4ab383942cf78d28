"""Counterfactual labelling speed: the batched labeller against one pair at a time.

    python benchmarks/labelling.py                  # 2,000 four-digit pairs, every default target
    python benchmarks/labelling.py --pairs 500 --digits 3

`label_table` (what addpatch stores labels with) reuses the causal model, its parsed targets and
each input's trace across targets; the one-at-a-time loop runs the causal model afresh for every
pair and target, as the pipeline we replace did. Both run in this one process, each starting from
empty caches; the figure is their ratio.
"""

from __future__ import annotations

import argparse
import time

from addpatch.task.addition import AdditionModel, AdditionTask, basic_model, carry_model
from addpatch.task.generators import generate_pairs
from addpatch.task.labels import default_targets, interchange_label, label_table, resolve_target


def fresh_models() -> None:
    basic_model.cache_clear()
    carry_model.cache_clear()


def uncached(model: AdditionModel) -> AdditionModel:
    model._trace_cache.clear()  # every label runs the causal model on both inputs again
    model.target_cache.clear()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--digits", type=int, default=4)
    args = parser.parse_args()
    task = AdditionTask(num_addends=2, num_digits=args.digits)
    pairs = generate_pairs("random", task, args.pairs, 0)
    targets = default_targets(task)

    fresh_models()
    started = time.perf_counter()
    table = label_table(task, pairs, targets)
    batched_s = time.perf_counter() - started

    fresh_models()
    started = time.perf_counter()
    single = {}
    for target in targets:
        model, _ = resolve_target(task, target)
        single[target] = [
            interchange_label(uncached(model), p.base, p.counterfactual, target) for p in pairs
        ]
    single_s = time.perf_counter() - started

    assert single == table, "the two labellers disagree"
    labels = len(pairs) * len(targets)
    print(f"{len(pairs)} pairs x {len(targets)} targets = {labels} labels")
    print(f"label_table:            {batched_s:.3f} s ({labels / batched_s:,.0f} labels/s)")
    print(f"one pair at a time:     {single_s:.3f} s ({labels / single_s:,.0f} labels/s)")
    print(f"speed-up: {single_s / batched_s:.1f}x")


if __name__ == "__main__":
    main()
