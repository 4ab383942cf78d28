"""Engine vs naive loop: interventions per second, measured speed-up, and the FLOP-bound ratio.

    python benchmarks/patch_sweep.py                 # both models, CPU (CUDA when present)
    python benchmarks/patch_sweep.py --examples 8 --models tiny
    python benchmarks/patch_sweep.py --components resid,heads   # a row per component

For each model, on the same examples and every (layer, position) cell:
  naive   one counterfactual forward over the batch, its activations kept for every cell
          (TransformerLens' `run_with_cache`), then for every cell a hooked `generate` over the
          batch (what TransformerLens' patching utilities do, batched over examples);
  engine  addpatch's PatchEngine.sweep.
Both must give identical answer tokens. The FLOP-bound ratio is naive FLOPs / engine FLOPs,
counted from the model's shapes for exactly the work each does (cells the engine answers from
the base run count zero for it): the speed-up a perfect implementation of each would show.
A component (attn, mlp, one head) at layer L costs both what the residual stream at layer L
costs: the naive loop hooks the component's module, the engine recomputes layer L's output at
the patched token and reruns from layer L + 1.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from addpatch.engine.naive import CounterfactualCache, naive_patch_batch
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_input
from addpatch.experiment.filtering import answer_budget
from addpatch.models.loading import load_model, resolve_model
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs


@dataclass
class Shapes:
    layers: int
    d_model: int
    d_ffn: int
    vocab: int
    kv_dim: int  # key/value width (grouped-query attention makes it smaller than d_model)

    def layer_flops(self, query_tokens: int, key_tokens: int) -> float:
        """Multiply-adds x 2 of one decoder layer over `query_tokens` new tokens."""
        projections = (
            2 * query_tokens * (2 * self.d_model * self.d_model + 2 * self.d_model * self.kv_dim)
        )
        mlp = 2 * query_tokens * 3 * self.d_model * self.d_ffn
        attention = 2 * 2 * query_tokens * key_tokens * self.d_model
        return projections + mlp + attention

    def head_flops(self, positions: int) -> float:
        return 2 * positions * self.d_model * self.vocab


def shapes_of(model) -> Shapes:
    c = model.config
    kv_heads = getattr(c, "num_key_value_heads", c.num_attention_heads)
    return Shapes(
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.vocab_size,
        c.hidden_size // c.num_attention_heads * kv_heads,
    )


def forward_flops(
    s: Shapes, tokens: int, first_layer: int, start: int, head_positions: int
) -> float:
    """Layers first_layer.. over query tokens start..tokens-1 (keys 0..tokens-1), plus the head."""
    return sum(
        s.layer_flops(tokens - start, tokens) for _ in range(first_layer, s.layers)
    ) + s.head_flops(head_positions)


def decode_flops(s: Shapes, prompt: int, steps: int) -> float:
    return sum(forward_flops(s, prompt + t + 1, 0, prompt + t, 1) for t in range(steps))


def flop_counts(
    s: Shapes,
    pairs: list[PromptPair],
    sites: list[tuple[int, int | None]],
    positions: list[str],
    new_tokens: int,
):
    naive = engine = 0.0
    for pair in pairs:
        t_base, t_cf = len(pair.base.token_ids), len(pair.counterfactual.token_ids)
        engine += forward_flops(s, t_base, 0, 0, 1) + forward_flops(s, t_cf, 0, 0, 1)
        engine += decode_flops(s, t_base, new_tokens - 1)
        # naive: one counterfactual forward (logits at every position), its activations kept
        naive += forward_flops(s, t_cf, 0, 0, t_cf)
        for layer, _ in sites:
            for name in positions:
                b, c = pair.base.index(name), pair.counterfactual.index(name)
                # naive: a hooked generate
                naive += forward_flops(s, t_base, 0, 0, 1)
                naive += decode_flops(s, t_base, new_tokens - 1)
                if (
                    b == c
                    and pair.base.token_ids[: b + 1] == pair.counterfactual.token_ids[: c + 1]
                ):
                    continue  # answered from the base run
                engine += forward_flops(s, t_base, layer + 1, b, 1) + decode_flops(
                    s, t_base, new_tokens - 1
                )
    return naive, engine


def bench(
    label: str,
    model,
    tokenizer,
    examples: int,
    new_tokens: int | None,
    digits: int,
    repeats: int = 1,
    component: str = "resid",
) -> dict:
    """Time both on every cell of one component; each time is the best of `repeats` runs."""
    engine = PatchEngine(model, tokenizer)
    task = AdditionTask(num_addends=2, num_digits=digits)
    pairs = [
        PromptPair(
            i,
            layout_input(engine.tokenizer, p.base),
            layout_input(engine.tokenizer, p.counterfactual),
        )
        for i, p in enumerate(generate_pairs("random", task, examples, seed=0))
    ]
    first = -1 if component == "resid" else 0
    layers = list(range(first, engine.num_layers))
    heads = list(range(engine.num_heads)) if component == "heads" else [None]
    sites = [(layer, head) for layer in layers for head in heads]
    positions = list(pairs[0].base.canonical)
    steps = new_tokens or answer_budget(engine.tokenizer, 2 * (10**digits - 1))
    cells = len(pairs) * len(sites) * len(positions)
    components = (component,)

    list(engine.sweep(pairs[:2], layers[:1], positions[:1], steps, components=components))
    engine_s = naive_s = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        engine_rows = [
            r
            for t in engine.sweep(pairs, layers, positions, steps, components=components)
            for r in t.to_pylist()
        ]
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        engine_s = min(engine_s, time.perf_counter() - started)

        started = time.perf_counter()
        naive_out = {}
        cache = CounterfactualCache()  # the counterfactual run, timed within the naive loop
        for layer, head in sites:
            for index, name in enumerate(positions):
                answers = naive_patch_batch(
                    model, tokenizer, pairs, layer, name, steps, component, head, cache
                )
                for pair, answer in zip(pairs, answers, strict=True):
                    naive_out[(pair.example_id, layer, head, index)] = answer.tokens
        naive_s = min(naive_s, time.perf_counter() - started)
    mismatches = sum(
        naive_out[(r["example_id"], r["layer"], r["head"], r["position"])] != r["token_ids"]
        for r in engine_rows
    )
    assert len(engine_rows) == cells

    naive_flops, engine_flops = flop_counts(shapes_of(model), pairs, sites, positions, steps)
    bound = naive_flops / engine_flops
    speedup = naive_s / engine_s
    return {
        "model": label if component == "resid" else f"{label} [{component}]",
        "device": str(engine.device),
        "cells": cells,
        "identical": mismatches == 0,
        "mismatches": mismatches,
        "engine_per_s": cells / engine_s,
        "naive_per_s": cells / naive_s,
        "speedup": speedup,
        "flop_bound": bound,
        "share_of_bound": speedup / bound,
    }


def random_llama(tokenizer, device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama-12x768", help="tiny, llama-12x768, or both")
    parser.add_argument("--examples", type=int, default=64, help="examples for the tiny adder")
    parser.add_argument(
        "--examples-large", type=int, default=4, help="examples for the 12-layer model"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per side (best kept), tiny adder"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--components", default="resid,heads", help="rows per model: resid, attn, mlp, heads"
    )
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    results = []
    if "tiny" in args.models:
        model, tokenizer = load_model(resolve_model("tiny-adder-digits"), device, torch.float32)
        for component in components:
            results.append(
                bench(
                    "tiny-adder-digits", model, tokenizer, args.examples, None, 2, args.repeats,
                    component,
                )
            )  # fmt: skip
    if "llama-12x768" in args.models:
        tokenizer = build_tokenizer("digits")
        model = random_llama(tokenizer, device)
        for component in components:
            results.append(
                bench(
                    "llama-12x768 (random init)", model, tokenizer, args.examples_large, 3, 2,
                    1, component,
                )
            )  # fmt: skip
    header = f"{'model':<36} {'device':<6} {'cells':>6} {'identical':>9} {'naive/s':>9} {'engine/s':>9} {'speed-up':>9} {'FLOP bound':>10} {'share':>6}"
    print(header)
    for r in results:
        print(
            f"{r['model']:<36} {r['device']:<6} {r['cells']:>6} {str(r['identical']):>9} "
            f"{r['naive_per_s']:>9.1f} {r['engine_per_s']:>9.1f} {r['speedup']:>8.1f}x "
            f"{r['flop_bound']:>9.1f}x {r['share_of_bound']:>6.0%}"
        )


if __name__ == "__main__":
    random.seed(0)
    main()
