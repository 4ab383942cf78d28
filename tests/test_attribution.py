"""Attribution patching: the engine's estimates against an independent autograd computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from addpatch.engine.attribution import (
    LONGER_LABEL,
    NO_BASE_NUMBER,
    SAME_ANSWER,
    SHORTER_LABEL,
    AnswerMetric,
    answer_metric,
    attribute,
)
from addpatch.engine.patching import PatchEngine
from tests.conftest import tiny_model
from tests.test_engine import _mixed_numbers, _pairs

POSITIONS = ["a0.d0", "a0.d1", "a1.d0", "w1.0", "last"]
COMPONENTS = ("resid", "attn", "mlp", "heads")


def _answer(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# -- the metric ---------------------------------------------------------------------------------
def test_metric_reads_the_first_differing_digit_token():
    _, tokenizer = tiny_model("llama", "digits")
    answer = _answer(tokenizer, " 57")  # ' ', '5', '7'
    token = tokenizer.convert_tokens_to_ids
    assert answer_metric(tokenizer, answer, 67) == AnswerMetric(1, token("6"), token("5"))
    assert answer_metric(tokenizer, answer, 58) == AnswerMetric(2, token("8"), token("7"))
    assert answer_metric(tokenizer, answer, 157) == AnswerMetric(1, token("1"), token("5"))
    assert answer_metric(tokenizer, answer, 57) == SAME_ANSWER
    assert answer_metric(tokenizer, answer, 5) == SHORTER_LABEL
    assert answer_metric(tokenizer, answer, 570) == LONGER_LABEL
    assert answer_metric(tokenizer, _answer(tokenizer, " The"), 5) == NO_BASE_NUMBER


def test_metric_swaps_the_digits_of_a_chunked_token():
    _, tokenizer = tiny_model("llama", "chunks")
    answer = _answer(tokenizer, " 579")  # ' ', '579'
    token = tokenizer.convert_tokens_to_ids
    assert answer_metric(tokenizer, answer, 679) == AnswerMetric(1, token("679"), token("579"))
    assert answer_metric(tokenizer, answer, 57) == SHORTER_LABEL


# -- the independent computation ----------------------------------------------------------------
def _modules(model: nn.Module, family: str, layer: int) -> dict[str, tuple[nn.Module, str]]:
    """Per component: the module and how its activation is read, found by name (not by the
    engine's LayerParts): `out` its output, `in` its first input."""
    if family == "gpt2":
        block = model.transformer.h[layer]
        return {
            "resid": (block, "out"),
            "attn": (block.attn, "out"),
            "mlp": (block.mlp, "out"),
            "heads": (block.attn.c_proj, "in"),
        }
    block = model.model.layers[layer]
    post_norm = family == "gemma2"
    return {
        "resid": (block, "out"),
        "attn": (block.post_attention_layernorm if post_norm else block.self_attn, "out"),
        "mlp": (block.post_feedforward_layernorm if post_norm else block.mlp, "out"),
        "heads": (block.self_attn.o_proj, "in"),
    }


def _sites(model: nn.Module, family: str, layers: int) -> dict[tuple[str, int], tuple]:
    sites = {}
    first = model.transformer.h[0] if family == "gpt2" else model.model.layers[0]
    sites[("resid", -1)] = (first, "in")  # the stream entering layer 0
    for layer in range(layers):
        for component, site in _modules(model, family, layer).items():
            sites[(component, layer)] = site
    return sites


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def _hooked_forward(model, sites, ids: list[int], deltas=None):
    """One example's plain forward: logits (T, vocab) and every site's activation (T, width);
    with `deltas`, each site's activation plus its delta (so d/d delta = d/d activation)."""
    seen: dict = {}
    handles = []
    for key, (module, how) in sites.items():

        def out_hook(module, args, output, key=key):
            value = _first(output)
            if deltas is not None:
                value = value + deltas[key]
                output = (value, *output[1:]) if isinstance(output, tuple) else value
            seen[key] = value[0]
            return output

        def in_hook(module, args, kwargs, key=key):
            value = args[0] if args else kwargs["hidden_states"]
            if deltas is not None:
                value = value + deltas[key]
            seen[key] = value[0]
            if args:
                return (value, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": value}

        if how == "out":
            handles.append(module.register_forward_hook(out_hook))
        else:
            handles.append(module.register_forward_pre_hook(in_hook, with_kwargs=True))
    try:
        logits = model(torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen


def _independent_estimates(model, family, num_heads, pair, answer, metric, positions):
    """(component, layer, position index, head) -> (a_cf - a_base) . dM/da, one example."""
    sites = _sites(model, family, model.config.num_hidden_layers)
    with torch.no_grad():
        _, counterfactual = _hooked_forward(model, sites, list(pair.counterfactual.token_ids))
        _, shapes = _hooked_forward(model, sites, list(pair.base.token_ids))
    ids = list(pair.base.token_ids) + answer[: metric.step]
    deltas = {
        key: torch.zeros(1, len(ids), value.shape[-1], requires_grad=True)
        for key, value in shapes.items()
    }
    logits, base = _hooked_forward(model, sites, ids, deltas)
    value = logits[-1, metric.label_token] - logits[-1, metric.base_token]
    grads = dict(zip(deltas, torch.autograd.grad(value, list(deltas.values())), strict=True))
    out = {}
    for (component, layer), grad in grads.items():
        for index, name in enumerate(positions):
            b, c = pair.base.index(name), pair.counterfactual.index(name)
            change = (counterfactual[(component, layer)][c] - base[(component, layer)][b]).detach()
            product = change * grad[0, b]
            if component == "heads":
                for head, part in enumerate(product.reshape(num_heads, -1).sum(-1).tolist()):
                    out[(component, layer, index, head)] = part
            else:
                out[(component, layer, index, None)] = float(product.sum())
    return out


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_estimates_equal_autograd_on_a_plain_hooked_forward(family):
    model, tokenizer = tiny_model(family, "digits", seed=5)
    engine = PatchEngine(model, tokenizer)
    pairs = _pairs(tokenizer, _mixed_numbers(2, 3))  # left padding; one shares its first addend
    answers = [_answer(tokenizer, text) for text in (" 57", " 1234", " 90")]
    labels = {
        "first": {0: 67, 1: 1244, 2: 90},  # example 2: label = base answer, no metric
        "second": {0: 58, 1: 2234, 2: 91},
    }
    layers = list(range(-1, engine.num_layers))
    table = attribute(
        engine, pairs, labels, layers, POSITIONS, 4, components=COMPONENTS, answers=answers
    )
    rows = table.to_pylist()
    metrics = {(r["example_id"], r["target"]): r for r in rows if r["component"] is None}
    assert metrics[(2, "first")]["no_metric"] == SAME_ANSWER
    assert metrics[(1, "first")]["step"] == 3  # ' ', '1', '2', then '3' -> '4'
    estimates = [r for r in rows if r["component"] is not None]
    cells_per_example = len(POSITIONS) * (
        len(layers) + 2 * engine.num_layers + engine.num_layers * engine.num_heads
    )
    assert len(estimates) == 5 * cells_per_example  # 6 (example, target) less the one without
    compared = 0
    for (example_id, target), found in metrics.items():
        if found["no_metric"] is not None:
            continue
        metric = AnswerMetric(found["step"], found["label_token"], found["base_token"])
        expected = _independent_estimates(
            model, family, engine.num_heads, pairs[example_id], answers[example_id], metric,
            POSITIONS,
        )  # fmt: skip
        for row in estimates:
            if (row["example_id"], row["target"]) != (example_id, target):
                continue
            key = (row["component"], row["layer"], row["position"], row["head"])
            shared = _shares_prefix(pairs[example_id], POSITIONS[row["position"]])
            want = 0.0 if shared else expected[key]
            assert row["estimate"] == pytest.approx(want, rel=1e-4, abs=1e-5), (key, target)
            compared += 1
    assert compared == len(estimates)
    assert any(abs(r["estimate"]) > 1e-3 for r in estimates)  # not all zero


def _shares_prefix(pair, name) -> bool:
    b, c = pair.base.index(name), pair.counterfactual.index(name)
    return b == c and pair.base.token_ids[: b + 1] == pair.counterfactual.token_ids[: c + 1]


def test_estimate_equals_exact_patching_where_the_metric_is_linear():
    """No final norm: the logits are linear in the last layer's output, and a patch there at the
    position the metric reads changes nothing else, so the estimate is the exact effect."""
    model, tokenizer = tiny_model("llama", "digits", seed=7)
    model.model.norm = nn.Identity()
    engine = PatchEngine(model, tokenizer)
    pairs = _pairs(tokenizer, _mixed_numbers(4, 3))
    answers = [_answer(tokenizer, "57")] * 3  # no space: the metric reads the last prompt token
    last = engine.num_layers - 1
    table = attribute(
        engine, pairs, {"t": dict.fromkeys(range(3), 67)}, [last], ["last"], 4, answers=answers
    )
    estimates = {r["example_id"]: r["estimate"] for r in table.to_pylist() if r["component"]}
    token = tokenizer.convert_tokens_to_ids
    ids_of = [list(p.base.token_ids) for p in pairs]
    block = model.model.layers[last]
    for pair, ids in zip(pairs, ids_of, strict=True):
        with torch.no_grad():
            cf_last = model(torch.tensor([list(pair.counterfactual.token_ids)]),
                            output_hidden_states=True).hidden_states[-1][0, -1]  # fmt: skip
            at = len(pair.base.token_ids) - 1  # the last prompt token

            def patch(module, args, output, at=at, cf_last=cf_last):
                value = _first(output).clone()
                value[0, at] = cf_last
                return (value, *output[1:]) if isinstance(output, tuple) else value

            def metric(logits):
                return float(logits[0, -1, token("6")] - logits[0, -1, token("5")])

            base = metric(model(torch.tensor([ids])).logits)
            handle = block.register_forward_hook(patch)
            try:
                patched = metric(model(torch.tensor([ids])).logits)
            finally:
                handle.remove()
        assert patched != pytest.approx(base)
        assert estimates[pair.example_id] == pytest.approx(patched - base, rel=1e-4, abs=1e-5)


def test_rank_agreement_counts_null_heads_and_breaks_ties_alike():
    import polars as pl

    from addpatch.report.attribution import agreement

    cells = pl.DataFrame(
        {
            "layer": [0, 0, 1, 1, 2],
            "head": [None] * 5,
            "position_name": ["a", "b", "a", "b", "a"],
            "mean_estimate": [5.0, 4.0, 0.1, 0.0, -1.0],
            "iia": [1.0, 0.0, 0.5, 0.0, 0.0],  # two cells moved: the top-2 lists
        }
    )
    rho, overlap = agreement(cells)
    assert overlap == 0.5  # (0, a) in both top-2 lists; (1, a) is 3rd by estimate
    ranks_est, ranks_iia = (
        [5.0, 4.0, 3.0, 2.0, 1.0],
        [5.0, 2.0, 4.0, 2.0, 2.0],
    )  # ties share their mean rank
    expected = pl.DataFrame({"x": ranks_est, "y": ranks_iia}).select(pl.corr("x", "y")).item()
    assert rho == pytest.approx(expected)
    assert agreement(cells.with_columns(pl.lit(0.0).alias("iia")))[1] is None


def test_patching_only_some_cells_gives_their_rows_of_the_whole_grid():
    model, tokenizer = tiny_model("llama", "digits", seed=3)
    engine = PatchEngine(model, tokenizer)
    pairs = _pairs(tokenizer, _mixed_numbers(5, 3))
    layers = list(range(-1, engine.num_layers))

    def rows(only=None):
        tables = engine.sweep(pairs, layers, POSITIONS, 4, components=COMPONENTS, only=only)
        return [r for t in tables for r in t.to_pylist()]

    every = rows()
    only = {("resid", -1, 0, None), ("heads", 1, 4, 2), ("mlp", 0, 2, None), ("attn", 1, 1, None)}
    chosen = rows(only)
    key = lambda r: (r["component"], r["layer"], r["position"], r["head"])  # noqa: E731
    assert {key(r) for r in chosen} == only
    expected = {(key(r), r["example_id"]): r for r in every if key(r) in only}
    assert len(chosen) == len(expected)
    for row in chosen:  # the same answers; log-probs to float tolerance (other batch shapes)
        want = expected[(key(row), row["example_id"])]
        assert row["token_ids"] == want["token_ids"] and row["top_ids"] == want["top_ids"]
        assert row["top_logprobs"] == pytest.approx(want["top_logprobs"], abs=1e-4)


def test_a_batch_out_of_memory_is_scored_in_halves(monkeypatch):
    from addpatch.experiment import attribution as steps

    model, tokenizer = tiny_model("llama", "digits", seed=5)
    engine = PatchEngine(model, tokenizer)
    pairs = _pairs(tokenizer, _mixed_numbers(2, 3))
    labels = {"t": {0: 67, 1: 1244, 2: 91}}
    answers = {0: " 57", 1: " 1234", 2: " 90"}
    real = steps.attribute

    def attribute(engine, batch, labels, *args, **kwargs):  # "out of memory" above 1 example
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        kwargs["answers"] = [_answer(tokenizer, answers[p.example_id]) for p in batch]
        return real(engine, batch, labels, *args, **kwargs)

    monkeypatch.setattr(steps, "attribute", attribute)
    tables, halvings, smallest = steps._attribute_halving_on_oom(
        engine, pairs, labels, [0], ["last"], 4, ("resid",)
    )
    assert (halvings, smallest) == (2, 1)  # 3 -> 1 + 2 -> 1 + 1 + 1
    whole = real(
        engine, pairs, labels, [0], ["last"], 4,
        answers=[_answer(tokenizer, answers[i]) for i in range(3)],
    )  # fmt: skip
    rows = sorted((r["example_id"], r["component"] or "", r["estimate"] or 0.0)
                  for t in tables for r in t.to_pylist())  # fmt: skip
    expected = sorted((r["example_id"], r["component"] or "", r["estimate"] or 0.0)
                      for r in whole.to_pylist())  # fmt: skip
    assert [r[:2] for r in rows] == [r[:2] for r in expected]
    assert [r[2] for r in rows] == pytest.approx([r[2] for r in expected], abs=1e-4)
