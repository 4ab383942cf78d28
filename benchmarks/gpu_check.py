"""One prepared check for a machine with a CUDA GPU (about 10 minutes at most on one GPU).

    python benchmarks/gpu_check.py            # on the GPU
    python benchmarks/gpu_check.py --smoke    # tiny sizes, any device (CPU): does the script work

(a) correctness: engine == naive hooked loop on every cell, fp32, for resid, attn, mlp and
    heads, on random-init Llama- and Gemma-2-shaped models (both tokenizer styles);
(b) speed: a random-init Llama-3.1-8B-shaped model (32 layers, 4096 wide, GQA with 8 key/value
    heads) in bf16 over 12 positions x 256 pairs x 3-token answers, every layer: interventions/s,
    peak GPU memory, and the speed-up over the naive loop on a subset of cells. A batch that
    runs out of GPU memory is halved and retried (the count is printed);
(c) DAS: one trained subspace (k 16) at a middle layer of that model, the frozen-prefix trainer
    against the plain loop (both prompts through the whole model every step): seconds per step
    each, the speed-up, and the largest gap between their losses.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig

from addpatch.engine.naive import CounterfactualCache, naive_patch_batch
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_prompt, render_with_spans
from addpatch.experiment.interventions import sweep_halving_on_oom
from addpatch.models.tiny_tokenizers import build_tokenizer

TEMPLATE = "The sum of {num0} and {num1} is"
COMPONENTS = ("resid", "attn", "mlp", "heads")


def _pairs(tokenizer, count: int, digits: int, seed: int) -> list[PromptPair]:
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10**digits - 1

    def layout(numbers: list[int]):
        return layout_prompt(tokenizer, *render_with_spans(TEMPLATE, numbers))

    return [
        PromptPair(
            i,
            layout([rng.randint(low, high), rng.randint(low, high)]),
            layout([rng.randint(low, high), rng.randint(low, high)]),
        )
        for i in range(count)
    ]


def _small_model(family: str, tokenizer, device: torch.device, seed: int):
    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = (
        LlamaConfig(**common)
        if family == "llama"
        else Gemma2Config(**common, head_dim=16, sliding_window=6, query_pre_attn_scalar=16)
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).to(device).eval()


def check_correctness(device: torch.device, pairs_per_model: int) -> bool:
    """(a): every cell of every component, engine against the naive loop, fp32."""
    ok = True
    for family in ("llama", "gemma2"):
        for grouping in ("digits", "chunks"):
            tokenizer = build_tokenizer(grouping)  # type: ignore[arg-type]
            model = _small_model(family, tokenizer, device, seed=1)
            pairs = _pairs(tokenizer, pairs_per_model, 3, seed=2)
            engine = PatchEngine(model, tokenizer)
            positions = list(pairs[0].base.canonical)
            layers = list(range(-1, engine.num_layers))
            checked = bad = 0
            cache = CounterfactualCache()
            for table in engine.sweep(pairs, layers, positions, 3, components=COMPONENTS):
                rows = table.to_pylist()
                cells = {(r["layer"], r["head"], r["position"]) for r in rows}
                component = rows[0]["component"]
                by_key = {(r["example_id"], r["layer"], r["head"], r["position"]): r for r in rows}
                for layer, head, position in sorted(cells, key=str):
                    answers = naive_patch_batch(
                        model,
                        tokenizer,
                        pairs,
                        layer,
                        positions[position],
                        3,
                        component,
                        head,
                        cache,
                    )
                    for pair, (tokens, _, logprobs, *_) in zip(pairs, answers, strict=True):
                        row = by_key.get((pair.example_id, layer, head, position))
                        if row is None:
                            continue
                        checked += 1
                        close = all(
                            abs(a - b) <= 1e-4
                            for a, b in zip(row["top_logprobs"], logprobs, strict=True)
                        )
                        bad += row["token_ids"] != tokens or not close
            print(f"  {family:<7} {grouping:<7} {checked:>6} rows compared, {bad} differ")
            ok = ok and bad == 0 and checked > 0
    return ok


def llama_8b_shaped(tokenizer, device: torch.device, dtype: torch.dtype, smoke: bool):
    sizes = (
        dict(hidden_size=64, intermediate_size=224, num_hidden_layers=4, num_attention_heads=8)
        if smoke
        else dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32
        )
    )
    config = LlamaConfig(
        **sizes,
        num_key_value_heads=8 if not smoke else 2,
        vocab_size=128256 if not smoke else len(tokenizer),
        max_position_embeddings=256,
        rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def time_large(device: torch.device, smoke: bool, batch_size: int) -> tuple:
    """(b): interventions/s, peak memory and the speed-up over the naive loop on a subset."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = build_tokenizer("digits")
    model = llama_8b_shaped(tokenizer, device, dtype, smoke)
    engine = PatchEngine(model, tokenizer)
    count = 16 if smoke else 256
    pairs = _pairs(tokenizer, count, 2, seed=3)
    positions = list(pairs[0].base.canonical)[-12:]  # 12 positions, the prompt's last ones
    layers = list(range(-1, engine.num_layers))
    steps = 3
    print(
        f"  model: {engine.num_layers} layers x {model.config.hidden_size}, "
        f"{model.config.num_key_value_heads} kv heads, {dtype}, {device}"
    )
    list(engine.sweep(pairs[:2], layers[-1:], positions[-1:], steps))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    rows = halvings = 0
    for start in range(0, count, batch_size):
        tables, more, _ = sweep_halving_on_oom(
            engine, pairs[start : start + batch_size], layers, positions, steps, ("resid",)
        )
        rows += sum(t.num_rows for t in tables)
        halvings += more
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(
        f"  engine: {rows:,} interventions ({count} pairs x {len(layers)} layers x "
        f"{len(positions)} positions) in {seconds:.1f} s = {rows / seconds:,.0f}/s; "
        f"peak GPU memory {peak:.1f} GiB; batches halved after OOM: {halvings}"
    )
    # the speed-up on a subset: a few layers and positions, the same pairs on both sides
    subset_pairs = pairs[: min(count, 32)]
    subset_layers, subset_positions = layers[:: max(1, len(layers) // 4)], positions[-3:]
    started = time.perf_counter()
    engine_rows = [
        r
        for t in engine.sweep(subset_pairs, subset_layers, subset_positions, steps)
        for r in t.to_pylist()
    ]
    if device.type == "cuda":
        torch.cuda.synchronize()
    engine_s = time.perf_counter() - started
    started = time.perf_counter()
    naive = {}
    cache = CounterfactualCache()  # one counterfactual run, timed within the naive loop
    for layer in subset_layers:
        for index, name in enumerate(subset_positions):
            answers = naive_patch_batch(
                model, tokenizer, subset_pairs, layer, name, steps, cache=cache
            )
            for pair, (tokens, *_) in zip(subset_pairs, answers, strict=True):
                naive[(pair.example_id, layer, index)] = tokens
    if device.type == "cuda":
        torch.cuda.synchronize()
    naive_s = time.perf_counter() - started
    same = sum(
        naive[(r["example_id"], r["layer"], r["position"])] == r["token_ids"] for r in engine_rows
    )
    print(
        f"  subset ({len(subset_pairs)} pairs x {len(subset_layers)} layers x "
        f"{len(subset_positions)} positions): engine {engine_s:.2f} s, naive {naive_s:.2f} s, "
        f"speed-up {naive_s / engine_s:.1f}x; identical answers {same}/{len(engine_rows)} "
        f"({'bf16: a few may differ' if dtype == torch.bfloat16 else 'fp32'})"
    )
    return model, tokenizer, pairs


def _addends(layout) -> list[int]:
    """The two addends of a digit-tokenized prompt, read back from its named positions."""
    numbers = []
    for addend in range(2):
        digits, d = [], 0
        while (index := layout.index(f"a{addend}.d{d}")) is not None:
            digits.append(layout.tokens[index].strip())
            d += 1
        numbers.append(int("".join(digits)))
    return numbers


def das_cell(model, tokenizer, pairs: list[PromptPair], smoke: bool) -> None:
    """(c): one DAS subspace at a middle layer, fast trainer against the plain loop."""
    from addpatch.das.examples import DasExample, label_token_ids
    from addpatch.das.training import TrainSettings, train_plain, train_subspace

    examples = []
    for pair in pairs[: 16 if smoke else 128]:  # label: the counterfactual's sum (raw_output)
        label = sum(_addends(pair.counterfactual))
        examples.append(DasExample(pair, label, label_token_ids(tokenizer, pair.base, label)))
    layer = model.config.num_hidden_layers // 2
    settings = TrainSettings(k=16, epochs=2, batch_size=8 if smoke else 32, seed=0)
    pad = tokenizer.pad_token_id
    timings = {}
    results = {}
    for name, train in (("fast", train_subspace), ("plain", train_plain)):
        started = time.perf_counter()
        results[name] = train(model, pad, examples, layer, "last", settings)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - started
    steps = len(results["fast"].losses)
    gap = max(
        abs(a - b) for a, b in zip(results["fast"].losses, results["plain"].losses, strict=True)
    )
    print(
        f"  layer {layer}, last token, k 16, {len(examples)} pairs, {steps} steps: fast "
        f"{timings['fast'] / steps:.3f} s/step, plain {timings['plain'] / steps:.3f} s/step, "
        f"speed-up {timings['plain'] / timings['fast']:.1f}x; largest loss gap {gap:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per engine batch")
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    started = time.perf_counter()
    print("(a) engine == naive loop on every cell, fp32, resid/attn/mlp/heads")
    ok = check_correctness(device, pairs_per_model=3 if args.smoke else 8)
    print(f"  {'all identical' if ok else 'MISMATCH'}")
    print("(b) Llama-3.1-8B-shaped model, random init" + (" (smoke sizes)" if args.smoke else ""))
    model, tokenizer, pairs = time_large(device, args.smoke, args.batch_size)
    print("(c) DAS: one subspace at a middle layer of that model")
    das_cell(model, tokenizer, pairs, args.smoke)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
